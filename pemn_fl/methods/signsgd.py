"""signSGD with majority vote (Bernstein et al., ICML 2018 / ICLR 2019), both directions 1 symbol.

On the dense FedAvg model (``compressed``): a client trains as a FedAvg client and sends the
sign of its update (``-1/0/+1`` per weight, range-coded: about 1 bit); the server takes the
unweighted majority (one vote per client, ties give 0) and broadcasts it the same way; every
party applies ``W += server_lr * majority``. Where we differ from the paper: the sign is of
a client's whole local update (local SGD epochs, as in federated signSGD variants), not of
one stochastic gradient, and there is no momentum (Signum).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_levels, encode_levels
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.compressed import DenseNet, Fields, UpdateCodec, Weights, method
from pemn_fl.options import Option

NAME = "signsgd"
SERVER_LR = Option("server-lr", 0.001, "the step everyone applies along the majority sign",
                   low=0, low_open=True)  # fmt: skip


def _encode(net: DenseNet, signs: Weights, tag: int) -> bytes:
    return encode_levels([(s + 1).astype(np.int16) for s in signs], fingerprint=net.fingerprint,
                         tag=tag, max_level=2)  # fmt: skip


def _decode(net: DenseNet, payload: object, tag: int) -> Weights:
    levels = decode_levels(bytes(payload), fingerprint=net.fingerprint, tag=tag,  # type: ignore[arg-type]
                           layer_sizes=net.sizes, max_level=2)  # fmt: skip
    return [lv.astype(np.float32) - np.float32(1.0) for lv in levels]


def encode_up(settings: RunSettings, net: DenseNet, delta: Weights, residual: Weights | None,
              tag: int) -> tuple[Fields, None]:  # fmt: skip
    return {"update": _encode(net, [np.sign(d) for d in delta], tag)}, None


def decode_up(settings: RunSettings, net: DenseNet, fields: Mapping[str, Any], tag: int) -> Weights:
    return _decode(net, fields["update"], tag)


def aggregate(settings: RunSettings, net: DenseNet, deltas: list[Weights], weights: list[float],
              state: dict, tag: int) -> Fields:  # fmt: skip
    votes = [np.zeros(s, dtype=np.int64) for s in net.sizes]
    for signs in deltas:  # one vote per client, as signSGD-MV
        for acc, s in zip(votes, signs, strict=True):
            acc += s.astype(np.int64)
    return {"update": _encode(net, [np.sign(v) for v in votes], tag)}


def decode_down(settings: RunSettings, net: DenseNet, fields: Mapping[str, Any], tag: int
                ) -> Weights:  # fmt: skip
    lr = np.float32(settings.scheduled(settings[SERVER_LR], tag))  # tag: the update's round
    return [(s * lr).astype(np.float32) for s in _decode(net, fields["update"], tag)]


def step_size(settings: RunSettings) -> float:
    """Every round's step is ``server-lr`` times the majority sign: rounds add up."""
    return float(settings[SERVER_LR])


CODEC = UpdateCodec(encode_up, decode_up, aggregate, decode_down, ("update",), ("update",),
                    step_size=step_size)  # fmt: skip
METHOD = method(NAME, CODEC, label="signSGD, majority vote", marker="-<",
                description="sign of the local update up, majority sign down, server lr "
                "(Bernstein et al. 2019)", options=(SERVER_LR, R.MERGED_CATCH_UP), order=100,
                grid=({"server-lr": 0.003}, {"server-lr": 0.001},
                      {"server-lr": 0.0003}))  # fmt: skip
