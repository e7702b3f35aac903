"""QSGD (Alistarh et al., NeurIPS 2017): stochastic quantisation to s levels, both directions.

On the dense FedAvg model (``compressed``). An update is cut into buckets of ``BUCKET``
consecutive weights (QSGD's bucketing, which bounds the variance); each bucket travels as
its L2 norm (float32) and, per weight, ``sign * xi`` with ``xi`` in ``0..s`` the stochastic
rounding of ``s * |v| / norm`` (unbiased). ``--bits b`` gives ``s = 2^(b-1) - 1`` levels
(b bits with the sign: 8 -> 127, 4 -> 7, 2 -> 1). The symbols are range-coded
(``levels_codec``) where QSGD uses Elias coding: the same idea, never longer than b bits.
The server averages the dequantised updates (example-weighted) and quantises the mean the
same way for the downlink, with a seeded rounding every party could reproduce; everyone
adds the dequantised mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_levels, encode_levels
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.compressed import (
    DenseNet,
    Fields,
    UpdateCodec,
    Weights,
    method,
    weighted_mean,
)
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed

NAME = "qsgd"
BITS = Option("bits", 8, "bits per weight with the sign", choices=(2, 4, 8))
BUCKET = 512  # weights per norm (QSGD's bucket size d)


def levels_of(settings: RunSettings) -> int:
    return 2 ** (int(settings[BITS]) - 1) - 1


def _buckets(size: int) -> int:
    return -(-size // BUCKET)


def quantize(values: Weights, s: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-bucket norms (float32) and symbols ``sign * xi + s`` in ``0..2s``."""
    rng = np.random.default_rng(seed)
    symbols, norms = [], []
    for v in values:
        v = v.astype(np.float64)
        pad = np.zeros(_buckets(v.size) * BUCKET)
        pad[: v.size] = v
        buckets = pad.reshape(-1, BUCKET)
        norm = np.linalg.norm(buckets, axis=1).astype(np.float32)
        scale = np.where(norm > 0, s / np.maximum(norm.astype(np.float64), 1e-30), 0.0)
        r = np.abs(buckets) * scale[:, None]
        low = np.floor(r)
        xi = low + (rng.random(r.shape) < (r - low))
        sym = (np.sign(buckets) * xi + s).reshape(-1)[: v.size]
        symbols.append(sym.astype(np.int16))
        norms.append(norm)
    return symbols, np.concatenate(norms) if norms else np.zeros(0, np.float32)


def dequantize(symbols: list[np.ndarray], norms: np.ndarray, s: int) -> Weights:
    out, start = [], 0
    for sym in symbols:
        nb = _buckets(sym.size)
        norm = np.repeat(norms[start : start + nb], BUCKET)[: sym.size]
        start += nb
        out.append(((sym.astype(np.float32) - np.float32(s)) * (norm / np.float32(s)))
                   .astype(np.float32))  # fmt: skip
    return out


def _encode(settings: RunSettings, net: DenseNet, values: Weights, seed: int, tag: int) -> Fields:
    s = levels_of(settings)
    symbols, norms = quantize(values, s, seed)
    return {"update": encode_levels(symbols, fingerprint=net.fingerprint, tag=tag,
                                    max_level=2 * s),  # fmt: skip
            "norms": norms.astype("<f4").tobytes()}


def _decode(settings: RunSettings, net: DenseNet, fields: Mapping[str, Any], tag: int) -> Weights:
    s = levels_of(settings)
    symbols = decode_levels(bytes(fields["update"]), fingerprint=net.fingerprint, tag=tag,
                            layer_sizes=net.sizes, max_level=2 * s)  # fmt: skip
    raw = bytes(fields["norms"])
    expected = sum(_buckets(n) for n in net.sizes)
    if len(raw) != 4 * expected:
        raise MaskPayloadError(f"{len(raw)} bytes of norms, expected {4 * expected}")
    norms = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not (np.isfinite(norms).all() and (norms >= 0).all()):
        raise MaskPayloadError("norms must be finite and non-negative")
    return dequantize(symbols, norms, s)


def encode_up(settings: RunSettings, net: DenseNet, delta: Weights, residual: Weights | None,
              tag: int) -> tuple[Fields, None]:  # fmt: skip
    # The rounding's seed only has to be fresh per client and round: take it from the update.
    seed = int.from_bytes(R.digest(delta), "little")
    return _encode(settings, net, delta, seed, tag), None


def decode_up(settings: RunSettings, net: DenseNet, fields: Mapping[str, Any], tag: int) -> Weights:
    return _decode(settings, net, fields, tag)


def aggregate(settings: RunSettings, net: DenseNet, deltas: list[Weights], weights: list[float],
              state: dict, tag: int) -> Fields:  # fmt: skip
    mean = weighted_mean(deltas, weights)
    return _encode(settings, net, mean, derived_seed(settings.seed, f"qsgd-down/{tag}"), tag)


CODEC = UpdateCodec(encode_up, decode_up, aggregate, _decode, ("update", "norms"),
                    ("update", "norms"))  # fmt: skip
METHOD = method(NAME, CODEC, label="QSGD (stochastic levels)", marker="-*",
                description="bucketed stochastic quantisation to 2^(b-1)-1 levels, both ways "
                "(Alistarh et al. 2017)", options=(BITS,), order=110,
                # The dense compressors tune what FedAvg tunes (their step size); QSGD at 4 bits.
                grid=({"bits": 4, "dense-lr": 0.1}, {"bits": 4, "dense-lr": 0.05},
                      {"bits": 4, "dense-lr": 0.02}))  # fmt: skip
