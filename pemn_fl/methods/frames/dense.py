"""The dense family's shared machinery: FedAvg's model and options, for every method that
trains it (``fedavg`` and the dense compressors ``signsgd``, ``qsgd``, ``topk``).

``DENSE_LR`` and ``DENSE_OPTIONS`` are the family's options (declared once, here, so no method
module needs another's); ``dense_net`` is the dense model flattened to the float32 arrays the
compressors replicate, and ``load`` puts such arrays back into the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.methods.frames import replica as R
from pemn_fl.options import Option

DENSE_LR = Option("dense-lr", 0.05, "weight learning rate of the dense model (SGD)", low=0,
                  low_open=True)  # fmt: skip
DENSE_OPTIONS = (DENSE_LR, N.DENSE_WIDTH)

Weights = list[np.ndarray]  # flat float32 arrays, in state_dict order


@dataclass(frozen=True)
class DenseNet:
    """The dense model's tensors: names, shapes, ``W_0`` and a fingerprint of ``W_0``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    initial: tuple[np.ndarray, ...]
    fingerprint: str  # 16 hex chars, binds payloads to this model

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]


@functools.lru_cache(maxsize=8)
def dense_net(settings: RunSettings) -> DenseNet:
    """FedAvg's model at ``--dense-width``, flattened; cached per process."""
    state = N.dense_model(settings).state_dict()
    names = tuple(state)
    initial = tuple(state[n].detach().numpy().astype(np.float32).reshape(-1) for n in names)
    for w in initial:
        w.setflags(write=False)
    shapes = tuple(tuple(state[n].shape) for n in names)
    return DenseNet(names, shapes, initial, R.digest(list(initial)).hex())


def load(model: nn.Module, net: DenseNet, weights: Weights) -> None:
    """Install flat ``weights`` into the dense model (state_dict order and shapes)."""
    model.load_state_dict(
        {n: torch.from_numpy(np.array(w).reshape(s)) for n, s, w in
         zip(net.names, net.shapes, weights, strict=True)}  # fmt: skip
    )
