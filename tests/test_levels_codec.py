"""Levels codec: exact round trips, near-entropy sizes, and every fault is one clear error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pemn_fl.levels_codec import (
    MAX_LEVEL,
    LevelsPayloadError,
    decode_levels,
    decode_steps,
    encode_levels,
    encode_steps,
)

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


# -- edges of the format, each with a payload whose right answer is known ----------------
def _raw(after_prefix: bytes, tag: int = 4) -> bytes:
    """A payload by hand: the fixed prefix, then ``after_prefix``, then a valid CRC."""
    prefix = struct.pack("<4sB8sI", b"PLVL", 1, bytes.fromhex(FP), tag)
    return _recrc(prefix + after_prefix)


def test_binary_masks_and_a_top_level_of_max_level_round_trip() -> None:
    # Q = 1 (a client's 0/1 mask, two symbols per layer) and Q = MAX_LEVEL, the bounds.
    mask = [np.array([0, 1, 1, 0, 1], np.int16), np.array([1, 0], np.int16)]
    got = _decode(encode_levels(mask, fingerprint=FP, tag=4, max_level=1), mask, q=1)
    assert [g.tolist() for g in got] == [[0, 1, 1, 0, 1], [1, 0]]
    top = [np.array([0, MAX_LEVEL, 7], np.int16)]
    got = _decode(encode_levels(top, fingerprint=FP, tag=4, max_level=MAX_LEVEL), top,
                  q=MAX_LEVEL)  # fmt: skip
    assert got[0].tolist() == [0, MAX_LEVEL, 7]
    with pytest.raises(ValueError, match="max_level"):
        encode_levels(top, fingerprint=FP, tag=4, max_level=MAX_LEVEL + 1)
    with pytest.raises(ValueError, match="max_level"):
        encode_levels(mask, fingerprint=FP, tag=4, max_level=0)


@pytest.mark.parametrize("tag", [0, 2**32 - 1])
def test_every_u32_tag_round_trips(tag: int) -> None:
    layers = [np.array([0, 1, 2], np.int16)]
    payload = encode_levels(layers, fingerprint=FP, tag=tag, max_level=2)
    assert _decode(payload, layers, q=2, tag=tag)[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("tag", [-1, 2**32])
def test_a_tag_outside_u32_is_a_programming_error(tag: int) -> None:
    with pytest.raises(ValueError, match="tag"):
        encode_levels([np.array([0, 1], np.int16)], fingerprint=FP, tag=tag, max_level=1)


def test_a_layer_of_more_than_16383_values_needs_a_three_byte_varint_and_round_trips() -> None:
    layer = np.zeros(20_000, np.int16)
    layer[::7] = 1  # 2858 ones, 17142 zeros: both counts and the size need 2-3 byte varints
    got = _decode(encode_levels([layer], fingerprint=FP, tag=4, max_level=1), [layer], q=1)
    assert np.array_equal(got[0], layer)


def test_a_2d_layer_is_flattened_in_c_order() -> None:
    layer = np.array([[0, 1, 2], [2, 1, 0]], np.int16)
    payload = encode_levels([layer], fingerprint=FP, tag=4, max_level=2)
    assert _decode(payload, [layer], q=2)[0].tolist() == [0, 1, 2, 2, 1, 0]


def test_decoded_levels_are_int16_for_coded_and_constant_layers() -> None:
    layers = [np.array([0, 3, 1], np.int16), np.full(4, 2, np.int16)]
    got = _decode(encode_levels(layers, fingerprint=FP, tag=4, max_level=3), layers, q=3)
    assert [g.dtype for g in got] == [np.int16, np.int16]
    assert [g.tolist() for g in got] == [[0, 3, 1], [2, 2, 2, 2]]


def test_constant_layers_empty_layers_and_no_layers_have_an_empty_body() -> None:
    # One symbol per layer (or none): nothing to range-code, the body is empty, and the
    # payload is header + 4-byte body length + CRC.
    layers = [np.full(5, 3, np.int16), np.zeros(0, np.int16), np.zeros(2, np.int16)]
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=3)
    assert payload[-8:-4] == b"\x00\x00\x00\x00"  # body length 0
    got = _decode(payload, layers, q=3)
    assert [g.tolist() for g in got] == [[3, 3, 3, 3, 3], [], [0, 0]]
    # No layer at all: 17 prefix + Q + layer count + body length + CRC = 27 bytes.
    empty = encode_levels([], fingerprint=FP, tag=4, max_level=1)
    assert len(empty) == 27
    assert decode_levels(empty, fingerprint=FP, tag=4, layer_sizes=[], max_level=1) == []


def test_a_bytearray_or_memoryview_payload_decodes_as_bytes() -> None:
    layers = [np.array([0, 1, 2, 1], np.int16)]
    payload = encode_levels(layers, fingerprint=FP, tag=4, max_level=2)
    for view in (bytearray(payload), memoryview(payload)):
        assert _decode(view, layers, q=2)[0].tolist() == [0, 1, 2, 1]  # type: ignore[arg-type]


def test_a_varint_of_more_than_ten_bytes_is_refused() -> None:
    # Q written as eleven bytes (ten with the continuation bit, then 0x01 = 2**70).
    payload = _raw(b"\x80" * 10 + b"\x01" + b"\x01" + b"\x00" * 4)
    with pytest.raises(LevelsPayloadError, match="longer than 10 bytes"):
        decode_levels(payload, fingerprint=FP, tag=4, layer_sizes=[1], max_level=2)


def test_a_varint_running_off_the_end_is_refused() -> None:
    # The layer count never ends: its continuation bits run through a CRC whose four bytes
    # all have the high bit set (filler picked so), to the end of the payload.
    for filler in range(0x80, 0x100):
        payload = _raw(b"\x01" + bytes([filler]) + b"\x80" * 4)
        if all(b & 0x80 for b in payload[-4:]):
            break
    else:  # pragma: no cover - about 1 in 16 fillers work
        raise AssertionError("no filler gave a CRC with four high bits")
    with pytest.raises(LevelsPayloadError, match="truncated while reading layer count"):
        decode_levels(payload, fingerprint=FP, tag=4, layer_sizes=[1], max_level=2)


def test_a_header_that_ends_where_the_body_length_should_start_is_refused() -> None:
    # Q = 1, one layer of 300 values (varint AC 02): counts 150, 150 (96 01); then the CRC.
    header = b"\x01\x01" + b"\xac\x02" + b"\x96\x01" * 2
    payload = _raw(header)
    with pytest.raises(LevelsPayloadError, match="truncated before the body length"):
        decode_levels(payload, fingerprint=FP, tag=4, layer_sizes=[300], max_level=1)


def test_a_body_length_that_is_not_whole_32_bit_words_is_refused() -> None:
    # Body length 2 with 2 body bytes: consistent with the payload, but not coder words.
    header = b"\x01\x01" + b"\xac\x02" + b"\x96\x01" * 2
    payload = _raw(header + struct.pack("<I", 2) + b"\x00\x00")
    with pytest.raises(LevelsPayloadError, match="body length"):
        decode_levels(payload, fingerprint=FP, tag=4, layer_sizes=[300], max_level=1)


def test_an_overlong_varint_is_refused_as_in_the_mask_codec() -> None:
    """One framing module under both codecs: the levels codec now refuses a varint spelled
    longer than it must be (``0x81 0x00`` for 1), as the mask codec always did."""
    from pemn_fl import framing

    good = encode_levels([np.array([0, 1, 1])], fingerprint=FP, tag=4, max_level=1)
    # The max level (1) is the first varint after the 17-byte prefix: spell it 0x81 0x00.
    body = good[:17] + b"\x81\x00" + good[18:-4]
    with pytest.raises(LevelsPayloadError, match="non-canonical"):
        decode_levels(framing.seal(body), fingerprint=FP, tag=4, layer_sizes=[3], max_level=1)


def test_signed_steps_round_trip_and_ternary_ones_are_the_plain_max_level_2_payload() -> None:
    steps = [np.array([-3, 0, 2, 1, 0]), np.zeros(4, dtype=np.int64)]
    payload = encode_steps(steps, fingerprint=FP, tag=7)
    back = decode_steps(payload, fingerprint=FP, tag=7, layer_sizes=[5, 4])
    assert all(np.array_equal(a, b) for a, b in zip(back, steps, strict=True))
    ternary = [np.array([-1, 0, 1, 1])]
    assert encode_steps(ternary, fingerprint=FP, tag=1) == encode_levels(
        [ternary[0] + 1], fingerprint=FP, tag=1, max_level=2)
    zeros = encode_steps([np.zeros(3, dtype=np.int64)], fingerprint=FP, tag=1)  # offset >= 1
    assert decode_steps(zeros, fingerprint=FP, tag=1, layer_sizes=[3])[0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="beyond the levels codec"):
        encode_steps([np.array([MAX_LEVEL])], fingerprint=FP, tag=1)


def test_signed_steps_refuse_an_odd_max_level_in_one_error() -> None:
    odd = encode_levels([np.array([0, 1, 3])], fingerprint=FP, tag=2, max_level=3)
    with pytest.raises(LevelsPayloadError, match="max level 3: signed steps need an even one"):
        decode_steps(odd, fingerprint=FP, tag=2, layer_sizes=[3])
    good = encode_steps([np.array([1, -1])], fingerprint=FP, tag=2)
    with pytest.raises(LevelsPayloadError, match="payload is for round 2, expected round 3"):
        decode_steps(good, fingerprint=FP, tag=3, layer_sizes=[2])
