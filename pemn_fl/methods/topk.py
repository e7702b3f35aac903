"""Top-k sparsification with error feedback (Stich et al. 2018; Karimireddy et al. 2019).

On the dense FedAvg model (``compressed``). A client adds its residual (what earlier
rounds' top-k left out, kept in its ``Context.state``) to its update, sends the largest
``--topk-fraction`` of each tensor by magnitude, and keeps the rest as the new residual.
On the wire: which weights (a 0/1 array, range-coded: about ``n * H(k/n)`` bits) and
their values (float32, in index order). The server averages the sparse updates (example-
weighted), adds its own residual, and sends the top-k of that the same way, keeping the
rest: both directions sparse, nothing a client asked for is lost, only delayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_levels, encode_levels
from pemn_fl.methods.frames.compressed import (
    DenseNet,
    Fields,
    UpdateCodec,
    Weights,
    method,
    weighted_mean,
)
from pemn_fl.options import Option

NAME = "topk"
TOPK_FRACTION = Option("topk-fraction", 0.01, "fraction of each tensor's update sent, both ways",
                       low=0, high=1, low_open=True)  # fmt: skip


def sparsify(values: Weights, fraction: float) -> tuple[list[np.ndarray], Weights]:
    """(kept 0/1 per weight, the rest): the ``ceil(fraction * n)`` largest ``|v|`` per tensor."""
    kept, rest = [], []
    for v in values:
        k = min(v.size, max(1, int(np.ceil(fraction * v.size))))
        idx = np.argpartition(np.abs(v), v.size - k)[v.size - k :]
        mask = np.zeros(v.size, dtype=np.int16)
        mask[idx] = 1
        kept.append(mask)
        rest.append(np.where(mask == 1, np.float32(0), v).astype(np.float32))
    return kept, rest


def _encode(net: DenseNet, values: Weights, kept: list[np.ndarray], tag: int) -> Fields:
    chosen = [v[m == 1] for v, m in zip(values, kept, strict=True)]
    return {"update": encode_levels(kept, fingerprint=net.fingerprint, tag=tag, max_level=1),
            "values": np.concatenate(chosen).astype("<f4").tobytes()}  # fmt: skip


def decode(settings: RunSettings, net: DenseNet, fields: Mapping[str, Any], tag: int) -> Weights:
    kept = decode_levels(bytes(fields["update"]), fingerprint=net.fingerprint, tag=tag,
                         layer_sizes=net.sizes, max_level=1)  # fmt: skip
    raw = bytes(fields["values"])
    count = int(sum(int(m.sum()) for m in kept))
    if len(raw) != 4 * count:
        raise MaskPayloadError(f"{len(raw)} bytes of values for {count} kept weights")
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    out, start = [], 0
    for m in kept:
        dense = np.zeros(m.size, dtype=np.float32)
        n = int(m.sum())
        dense[m == 1] = values[start : start + n]
        start += n
        out.append(dense)
    return out


def encode_up(settings: RunSettings, net: DenseNet, delta: Weights, residual: Weights | None,
              tag: int) -> tuple[Fields, Weights]:  # fmt: skip
    total = delta if residual is None else [d + r for d, r in zip(delta, residual, strict=True)]
    kept, rest = sparsify(total, float(settings[TOPK_FRACTION]))
    return _encode(net, total, kept, tag), rest


def aggregate(settings: RunSettings, net: DenseNet, deltas: list[Weights], weights: list[float],
              state: dict, tag: int) -> Fields:  # fmt: skip
    mean = weighted_mean(deltas, weights)
    if "residual" in state:
        mean = [m + r for m, r in zip(mean, state["residual"], strict=True)]
    kept, state["residual"] = sparsify(mean, float(settings[TOPK_FRACTION]))
    return _encode(net, mean, kept, tag)


CODEC = UpdateCodec(encode_up, decode, aggregate, decode, ("update", "values"),
                    ("update", "values"))  # fmt: skip
METHOD = method(NAME, CODEC, label="Top-k + error feedback", marker="->",
                description="largest-k update entries with their float32 values, both ways, "
                "residuals kept on both sides", options=(TOPK_FRACTION,), order=120,
                grid=({"dense-lr": 0.1}, {"dense-lr": 0.05}, {"dense-lr": 0.2}))  # fmt: skip
