"""Seeded fuzzing of every wire format a peer can send us: 10,000+ mutated payloads each.

Whatever arrives, a decoder either returns arrays of exactly the expected sizes or raises its
payload error (a ``MaskPayloadError``); nothing else may escape, or a hostile reply would
stop a round instead of being rejected and logged. CRC32 makes most mutations fail early;
half of the cases re-compute it so the body decoders are reached too.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.levels_codec import decode_levels, encode_levels

FP = "0123456789abcdef"
SIZES = [37, 5, 300]
CASES = 10_000


def _mutants(valid: list[bytes], seed: int):  # noqa: ANN202
    """``CASES`` seeded variations: flips, truncations, insertions, random bytes; half with
    a re-computed CRC so the decoder gets past the checksum."""
    rng = np.random.default_rng(seed)
    for i in range(CASES):
        data = bytearray(valid[i % len(valid)])
        kind = i % 4
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        elif kind == 1:
            data = data[: int(rng.integers(len(data)))]
        elif kind == 2:
            at = int(rng.integers(len(data)))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            data = bytearray(rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8))
        if i % 2 and len(data) >= 4:
            data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
        yield bytes(data)


def test_mask_codec_survives_ten_thousand_mutants() -> None:
    rng = np.random.default_rng(0)
    reference = [rng.random(s) < 0.5 for s in SIZES]
    masks = [[rng.random(s) < p for s in SIZES] for p in (0.02, 0.5)]
    valid = [encode_mask(m, fingerprint=FP) for m in masks]
    valid += [encode_mask(m, fingerprint=FP, reference=reference, reference_id=3) for m in masks]
    accepted = 0
    for payload in _mutants(valid, seed=1):
        try:
            out = decode_mask(payload, fingerprint=FP, layer_sizes=SIZES,
                              references={3: reference})  # fmt: skip
        except MaskPayloadError:
            continue
        assert [a.size for a in out] == SIZES
        accepted += 1
    assert accepted < CASES // 10  # almost every mutant is caught


@pytest.mark.parametrize("max_level", [1, 4])
def test_levels_codec_survives_ten_thousand_mutants(max_level: int) -> None:
    rng = np.random.default_rng(2)
    arrays = [[rng.integers(0, max_level + 1, s) for s in SIZES],
              [(rng.random(s) < 0.05).astype(int) for s in SIZES]]  # fmt: skip
    valid = [encode_levels(a, fingerprint=FP, tag=7, max_level=max_level) for a in arrays]
    for payload in _mutants(valid, seed=3):
        try:
            out = decode_levels(payload, fingerprint=FP, tag=7, layer_sizes=SIZES,
                                max_level=max_level)  # fmt: skip
        except MaskPayloadError:
            continue
        assert [a.size for a in out] == SIZES
        assert all(a.min() >= 0 and a.max() <= max_level for a in out if a.size)
