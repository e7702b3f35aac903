"""Levels codec: exact round trips, near-entropy sizes, and every fault is one clear error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pemn_fl.levels_codec import LevelsPayloadError, decode_levels, encode_levels

FP = "0123456789abcdef"


def _layers(seed: int = 0, q: int = 10) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.binomial(q, 0.05, size=5000).astype(np.int16), np.zeros(7, np.int16),
            np.full(3, q, np.int16), rng.binomial(q, 0.5, size=301).astype(np.int16)]  # fmt: skip


def _decode(payload: bytes, layers: list[np.ndarray], q: int = 10, tag: int = 4) -> list:
    return decode_levels(payload, fingerprint=FP, tag=tag, layer_sizes=[x.size for x in layers],
                         max_level=q)  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_is_exact(seed: int) -> None:
    layers = _layers(seed)
    got = _decode(encode_levels(layers, fingerprint=FP, tag=4, max_level=10), layers)
    assert all(np.array_equal(a, b) for a, b in zip(layers, got, strict=True))


def test_size_is_close_to_the_empirical_entropy() -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random(200_000) < 0.05).astype(np.int16)
    payload = encode_levels([mask], fingerprint=FP, tag=1, max_level=1)
    p = mask.mean()
    entropy_bytes = mask.size * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    assert entropy_bytes < len(payload) < 1.02 * entropy_bytes + 64


def test_every_single_byte_corruption_is_rejected() -> None:
    layers = [np.array([0, 1, 2, 0, 0, 1], np.int16)]
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=2)
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x5A
        with pytest.raises(LevelsPayloadError):
            _decode(bytes(bad), layers, q=2)


def test_every_truncation_is_rejected() -> None:
    layers = _layers(2)
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=10)
    for n in range(len(payload)):
        with pytest.raises(LevelsPayloadError):
            _decode(payload[:n], layers)


@pytest.mark.parametrize("change,match", [
    ({"fingerprint": "f" * 16}, "fingerprint"), ({"tag": 5}, "round"),
    ({"layer_sizes": [5000, 7, 3, 300]}, "layer 3"), ({"max_level": 3}, "max level"),
])  # fmt: skip
def test_header_lies_are_rejected(change: dict, match: str) -> None:
    layers = _layers(3)
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=10)
    kwargs = {"fingerprint": FP, "tag": 4, "layer_sizes": [x.size for x in layers],
              "max_level": 10, **change}  # fmt: skip
    with pytest.raises(LevelsPayloadError, match=match):
        decode_levels(payload, **kwargs)


def test_out_of_range_levels_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="levels must lie"):
        encode_levels([np.array([0, 3], np.int16)], fingerprint=FP, tag=1, max_level=2)


def _recrc(body: bytes) -> bytes:
    """``body`` with a valid CRC32 appended: a lie only the header checks can catch."""
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("extra", [b"\x00" * 4, b"\x01\x02\x03\x04" * 3])
def test_trailing_bytes_behind_a_recomputed_crc_are_rejected(extra: bytes) -> None:
    # Whole 32-bit words after the body, the CRC redone over them: the body length in the
    # header no longer reaches the CRC, so the payload is not the one the sender encoded.
    layers = _layers(4)
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=10)
    same = _decode(_recrc(payload[:-4]), layers)  # the re-CRC alone changes nothing
    assert all(np.array_equal(a, b) for a, b in zip(layers, same, strict=True))
    with pytest.raises(LevelsPayloadError, match="body length"):
        _decode(_recrc(payload[:-4] + extra), layers)
