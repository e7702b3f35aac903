"""The PEMN-FL protocol pieces both sides share: building the network, the initial mask, and
one client round (decode -> init scores -> train -> encode). The Flower apps stay thin.

Message layout (keys are constants here so both sides agree):

* downlink ``train.pemn``: ``ConfigRecord "config"`` = {``server-round``, ``mask-id``,
  ``mask`` (codec payload: delta against the mask the node holds, or packed)}.
* uplink reply: ``ConfigRecord "update"`` = {``mask`` (codec payload, delta against the
  global it received)}, ``MetricRecord "metrics"`` = {``num-examples``, ``train-loss``}.

Version 0 of the global mask is derived from the seed by every party, so nothing has to be
sent to establish it; after that, version ``v`` is the mask the server produced in round ``v``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pemn_fl.codec import decode_mask, encode_mask
from pemn_fl.config import RunSettings, check_width
from pemn_fl.data import Dataset, load_dataset
from pemn_fl.masked import get_masks, masked_layers
from pemn_fl.models import build_model, layer_shapes
from pemn_fl.options import Option
from pemn_fl.partition import partition_for
from pemn_fl.prototype import derived_seed, fingerprint, materialize
from pemn_fl.scores import realign, scores_from_mask
from pemn_fl.task import train

CONFIG_KEY, UPDATE_KEY, METRICS_KEY = "config", "update", "metrics"
MASK, MASK_ID, ROUND = "mask", "mask-id", "server-round"


def _dense_fits(width: object, settings: object) -> None:
    check_width(settings, "dense-width", float(width))  # type: ignore[arg-type]


# -- the frozen-prototype (mask) family's options: pemn, pemn_wide ------------------------
LR = Option("lr", 1.0, "score learning rate of the masked model (tuned for the digits "
            "classroom default)", low=0, low_open=True)  # fmt: skip
KEEP = Option("keep", 0.5, "fraction of each layer's edges a mask keeps", low=0, high=1,
              low_open=True, high_open=True)  # fmt: skip
CLIENT_INIT = Option("client-init", "stateful", "a client's scores: stateful (its own, carried "
                     "across rounds) or stateless (from the global mask each round)",
                     choices=("stateless", "stateful"))  # fmt: skip
MARGIN = Option("margin", 0.0, "score margin around the keep threshold when a client starts "
                "from the global mask", low=0, high=1e3)  # fmt: skip
SERVER_MOMENTUM = Option("server-momentum", 0.0, "momentum of the server's vote tally",
                         low=0, high=1, high_open=True)  # fmt: skip
MASK_OPTIONS = (LR, KEEP, CLIENT_INIT, MARGIN, SERVER_MOMENTUM)
# -- the dense family's options: fedavg, signsgd, qsgd, topk -----------------------------
DENSE_LR = Option("dense-lr", 0.05, "weight learning rate of the dense model (SGD)", low=0,
                  low_open=True)  # fmt: skip
DENSE_WIDTH = Option("dense-width", 1.0, "width multiplier of the dense model", low=0,
                     low_open=True, check=_dense_fits)  # fmt: skip
DENSE_OPTIONS = (DENSE_LR, DENSE_WIDTH)

Mask = list[np.ndarray]


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


@functools.lru_cache(maxsize=8)
def initial_mask(settings: RunSettings) -> Mask:
    """Global mask version 0: a seeded random top-k every party derives without any traffic.

    Cached per process and returned read-only, since every round of every client needs it.
    """
    model, _ = masked_model(settings)
    gen = torch.Generator().manual_seed(derived_seed(settings.seed, "initial-mask"))
    for _, layer in masked_layers(model):
        layer.set_scores(torch.rand(layer.scores.shape, generator=gen))
    masks = masks_of(model)
    for m in masks:
        m.setflags(write=False)
    return masks


def masks_of(model: nn.Module) -> Mask:
    return [m.flatten().numpy().copy() for m in get_masks(model)]


def load_mask(model: nn.Module, mask: Mask) -> None:
    """Make ``model`` compute exactly with ``mask`` (scores = the mask itself)."""
    for (_, layer), bits in zip(masked_layers(model), mask, strict=True):
        layer.set_scores(torch.from_numpy(bits.astype(np.float32)).view_as(layer.scores))


def init_scores(
    model: nn.Module, global_mask: Mask, previous_scores: list[np.ndarray] | None,
    settings: RunSettings, tag: str,
) -> None:  # fmt: skip
    """Start local training from ``global_mask``: stateless or stateful (see ``scores``)."""
    gen = torch.Generator().manual_seed(derived_seed(settings.seed, tag))
    layers = masked_layers(model)
    for i, (_, layer) in enumerate(layers):
        g = torch.from_numpy(global_mask[i]).view_as(layer.scores)
        if settings[CLIENT_INIT] == "stateful" and previous_scores is not None:
            prev = torch.from_numpy(previous_scores[i]).view_as(layer.scores)
            scores = realign(prev, g, eps=max(settings[MARGIN], 1e-3))
        else:
            scores = scores_from_mask(g, settings[MARGIN], gen)
        layer.set_scores(scores)


@dataclass
class ClientRoundResult:
    payload: bytes
    num_examples: int
    train_loss: float
    scores: list[np.ndarray]
    received: Mask


def client_round(
    settings: RunSettings,
    partition_id: int,
    num_partitions: int,
    payload: bytes,
    held: dict[int, Mask],
    mask_id: int,
    previous_scores: list[np.ndarray] | None,
    server_round: int,
    invert: bool = False,
) -> ClientRoundResult:
    """One PEMN-FL client round. Raises ``MaskPayloadError`` for a bad downlink payload.

    ``invert``: a Byzantine client (``--byzantine``) sends the complement of its trained mask,
    a well-formed payload that votes against every edge it found useful."""
    model, proto = masked_model(settings)
    references = {0: initial_mask(settings), **held}
    received = decode_mask(
        payload, fingerprint=proto.fingerprint, layer_sizes=proto.layer_sizes,
        references=references,
    )  # fmt: skip
    init_scores(model, received, previous_scores, settings, f"client/{partition_id}/{server_round}")
    x, y = client_data(settings, partition_id, num_partitions)
    loss = train(
        model, x, y, settings.train_config(settings.scheduled(settings[LR], server_round)),
        seed=derived_seed(settings.seed, f"batches/{partition_id}/{server_round}"),
    )  # fmt: skip
    sent = [np.logical_not(m) for m in masks_of(model)] if invert else masks_of(model)
    update = encode_mask(
        sent, fingerprint=proto.fingerprint, reference=received, reference_id=mask_id
    )
    scores = [layer.scores.detach().flatten().numpy().copy() for _, layer in masked_layers(model)]
    return ClientRoundResult(update, len(y), loss, scores, received)
