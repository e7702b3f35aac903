"""The run's data slice and every network a method trains, built from the seed alone.

Every party builds its models here, so that a client, the server and a resumed run agree on
shapes, initial weights and fingerprints without any of them travelling:

* ``masked_model``: the frozen random prototype with edge scores (pemn, pemn_wide, fedpm);
* ``dense_model``: FedAvg's dense network with PyTorch's standard, seeded init (the dense
  family: fedavg, signsgd, qsgd, topk);
* ``plain_model``: the dense, bias-free architecture at ``--width`` whose weights the evolving
  prototype replaces by the seed's prototype (evolve*).

All three come from ``models.build_model``; the two options declared here shape them and are
listed by the methods whose networks they shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pemn_fl.config import RunSettings, check_width
from pemn_fl.data import Dataset, load_dataset
from pemn_fl.masked import masked_layers
from pemn_fl.models import build_model, layer_shapes
from pemn_fl.options import Option
from pemn_fl.partition import partition_for
from pemn_fl.prototype import derived_seed, fingerprint, materialize


def _dense_fits(width: object, settings: object) -> None:
    check_width(settings, "dense-width", float(width))  # type: ignore[arg-type]


KEEP = Option("keep", 0.5, "fraction of each layer's edges a mask keeps", low=0, high=1,
              low_open=True, high_open=True)  # fmt: skip
DENSE_WIDTH = Option("dense-width", 1.0, "width multiplier of the dense model", low=0,
                     low_open=True, check=_dense_fits)  # fmt: skip


def dataset_of(settings: RunSettings) -> Dataset:
    return load_dataset(settings.dataset, settings.data_dir or None, seed=settings.seed)


def client_data(
    settings: RunSettings, partition_id: int, num_partitions: int
) -> tuple[np.ndarray, np.ndarray]:
    """This node's training slice, from the shared, seeded flwr-datasets partition."""
    data = dataset_of(settings)
    parts = partition_for(
        settings.dataset, settings.data_dir or None, settings.seed, num_partitions,
        settings.partition, settings.alpha, settings.classes_per_client,
    )  # fmt: skip
    idx = parts[partition_id]
    return data.x_train[idx], data.y_train[idx]


def partition_sizes(settings: RunSettings, num_partitions: int) -> dict[int, int]:
    """Training examples per partition id (what each node trains on, per epoch)."""
    parts = partition_for(
        settings.dataset, settings.data_dir or None, settings.seed, num_partitions,
        settings.partition, settings.alpha, settings.classes_per_client,
    )  # fmt: skip
    return {pid: len(idx) for pid, idx in enumerate(parts)}


@dataclass(frozen=True)
class Prototype:
    weights: dict[str, torch.Tensor]
    fingerprint: str
    layer_sizes: tuple[int, ...]


@functools.lru_cache(maxsize=8)
def _prototype(settings: RunSettings, input_shape: tuple[int, int, int], classes: int) -> Prototype:
    model = build_model(
        settings.model, input_shape, classes, masked=True, width=settings.width,
        keep=settings[KEEP],
    )
    shapes = layer_shapes(model)
    weights = materialize(settings.prototype_spec, shapes)
    return Prototype(
        weights, fingerprint(settings.prototype_spec, weights), tuple(s.numel for s in shapes)
    )


def masked_model(settings: RunSettings) -> tuple[nn.Module, Prototype]:
    """A fresh masked model over the run's prototype (weights are cached per process)."""
    data = dataset_of(settings)
    model = build_model(
        settings.model, data.input_shape, data.num_classes,
        masked=True, width=settings.width, keep=settings[KEEP],
    )  # fmt: skip
    proto = _prototype(settings, data.input_shape, data.num_classes)
    for name, layer in masked_layers(model):
        layer.set_weight(proto.weights[name])
    return model, proto


def dense_model(settings: RunSettings) -> nn.Module:
    """The FedAvg baseline: same architecture, dense weights, PyTorch's standard init."""
    data = dataset_of(settings)
    torch.manual_seed(derived_seed(settings.seed, "dense-init") % 2**31)
    return build_model(
        settings.model, data.input_shape, data.num_classes, masked=False,
        width=settings[DENSE_WIDTH],
    )


def plain_model(settings: RunSettings) -> nn.Module:
    """The dense architecture at ``--width`` (bias-free layers, non-affine BN)."""
    data = dataset_of(settings)
    return build_model(
        settings.model, data.input_shape, data.num_classes, masked=False, width=settings.width
    )
