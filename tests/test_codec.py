"""Tests for pemn_fl.codec: round trips, exact byte layout, and refusal of every bad payload.

Hostile payloads are forged here with ``struct`` and ``zlib`` from the documented layout rather
than through codec internals, so a header that "lies" carries a *valid* CRC and reaches the
semantic checks, and the layout itself is pinned by golden bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pemn_fl.codec import (
    ENCODINGS,
    FORMAT_VERSION,
    MaskPayloadError,
    PayloadHeader,
    decode_mask,
    encode_mask,
    fingerprint_bytes,
    inspect_payload,
)

FP = "0123456789abcdef"
OTHER_FP = "fedcba9876543210"
NONE_ID = 0xFFFF_FFFF
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def forge(
    *,
    sizes: Sequence[int],
    body: bytes,
    encoding: int = 0,
    ref_id: int = NONE_ID,
    fp: str = FP,
    version: int = 1,
    magic: bytes = b"PMSK",
    n_layers: int | None = None,
    body_len: int | None = None,
) -> bytes:
    """Build a payload from the documented layout, with a correct CRC over whatever it says."""
    head = (
        magic
        + struct.pack("<BB", version, encoding)
        + bytes.fromhex(fp)
        + struct.pack("<I", ref_id)
        + varint(len(sizes) if n_layers is None else n_layers)
        + b"".join(varint(s) for s in sizes)
        + struct.pack("<I", len(body) if body_len is None else body_len)
    )
    data = head + body
    return data + struct.pack("<I", zlib.crc32(data))


def fix_crc(payload: bytes) -> bytes:
    data = payload[:-4]
    return data + struct.pack("<I", zlib.crc32(data))


def flat(layers: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a).reshape(-1) for a in layers] or [np.zeros(0, bool)])


def assert_same(decoded: Sequence[np.ndarray], layers: Sequence[np.ndarray]) -> None:
    assert len(decoded) == len(layers)
    for got, want in zip(decoded, layers, strict=True):
        assert got.dtype == np.bool_
        assert got.shape == (np.asarray(want).size,)
        np.testing.assert_array_equal(got, np.asarray(want).reshape(-1))


def roundtrip(
    layers: Sequence[np.ndarray],
    reference: Sequence[np.ndarray] | None = None,
    encoding: str = "auto",
    ref_id: int = 5,
) -> bytes:
    kwargs = {} if reference is None else {"reference": reference, "reference_id": ref_id}
    payload = encode_mask(layers, fingerprint=FP, encoding=encoding, **kwargs)
    refs = None if reference is None else {ref_id: reference}
    sizes = [np.asarray(a).size for a in layers]
    assert_same(decode_mask(payload, fingerprint=FP, layer_sizes=sizes, references=refs), layers)
    header = inspect_payload(payload)
    assert header.layer_sizes == tuple(sizes)
    assert header.payload_bytes == len(payload)
    return payload


def rand_layers(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], p: float):
    return [rng.random(s) < p for s in shapes]


def flip(rng: np.random.Generator, layers: Sequence[np.ndarray], p: float) -> list[np.ndarray]:
    return [a ^ (rng.random(a.shape) < p) for a in layers]


def delta_body(m: int, k: int, unary: bytes, rem: bytes = b"") -> bytes:
    return varint(m) + bytes([k]) + unary + rem


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------

SHAPES = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 1100)),
        st.tuples(st.integers(0, 12), st.integers(0, 12)),
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6)),
    ),
    min_size=0,
    max_size=5,
)
DENSITY = st.sampled_from([0.0, 1.0, 0.5, 0.01, 0.1, 0.9, 0.3])


@FAST
@given(shapes=SHAPES, p=DENSITY, flip_p=DENSITY, seed=st.integers(0, 2**32 - 1))
def test_roundtrip_every_encoding(shapes, p, flip_p, seed) -> None:
    rng = np.random.default_rng(seed)
    reference = rand_layers(rng, shapes, p)
    layers = flip(rng, reference, flip_p)
    plain = roundtrip(layers)
    packed = roundtrip(layers, reference, "packed")
    delta = roundtrip(layers, reference, "delta")
    auto = roundtrip(layers, reference, "auto")
    assert plain == packed
    assert inspect_payload(packed).encoding == "packed"
    assert inspect_payload(delta).encoding == "delta"
    # auto sends the smaller one; ties go to packed (no dependency on the reference).
    assert len(auto) == min(len(packed), len(delta))
    assert auto == (packed if len(packed) <= len(delta) else delta)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1001])
@pytest.mark.parametrize("fill", [False, True])
def test_odd_lengths_all_zero_all_one(n: int, fill: bool) -> None:
    layers = [np.full(n, fill)]
    payload = roundtrip(layers)
    assert inspect_payload(payload).body_bytes == math.ceil(n / 8)
    roundtrip(layers, [np.full(n, not fill)], "delta")  # all flips
    roundtrip(layers, [np.full(n, fill)], "delta")  # no flips


def test_empty_masks() -> None:
    for layers in ([], [np.zeros(0, bool)], [np.zeros((0, 3), bool), np.zeros(0, bool)]):
        roundtrip(layers)
        roundtrip(layers, [np.zeros(a.shape, bool) for a in layers], "delta")
    assert decode_mask(encode_mask([], fingerprint=FP), fingerprint=FP, layer_sizes=[]) == []


def test_mixed_layers_with_shapes_and_non_contiguous_views() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((30, 40)) < 0.5
    layers = [base.T, base[::3, 1::2], np.zeros(0, bool), rng.random((2, 3, 5)) < 0.2, base[0]]
    reference = flip(rng, layers, 0.05)
    for encoding in ("packed", "delta", "auto"):
        roundtrip(layers, reference, encoding)


@pytest.mark.parametrize("p", [0.0, 0.001, 0.05, 0.5, 1.0])
def test_delta_flip_rates(p: float) -> None:
    rng = np.random.default_rng(1)
    reference = rand_layers(rng, [(5000,), (333,), (64, 10)], 0.5)
    layers = flip(rng, reference, p)
    roundtrip(layers, reference, "delta")
    roundtrip(layers, reference, "auto")


@FAST
@given(
    n=st.integers(1, 5000),
    p_near=st.sampled_from([0.001, 0.02, 0.2, 0.6]),
    p_far=st.sampled_from([0.0, 0.0005, 0.01]),
    seed=st.integers(0, 2**32 - 1),
)
def test_rice_parameter_is_optimal(n, p_near, p_far, seed) -> None:
    """Clustered + sparse flips (bimodal gaps, where the textbook k is off) still get the best k."""
    rng = np.random.default_rng(seed)
    reference = [rng.random(n) < 0.5]
    flips = np.where(np.arange(n) < n // 3, rng.random(n) < p_near, rng.random(n) < p_far)
    payload = roundtrip([reference[0] ^ flips], reference, "delta")
    positions = np.flatnonzero(flips)
    m = positions.size
    gaps = np.diff(positions, prepend=-1) - 1
    best = min(
        len(varint(m)) + 1 + math.ceil((m + int(np.sum(gaps >> k))) / 8) + math.ceil(m * k / 8)
        for k in range(0, 16)
    )
    # The codec minimises bits; byte rounding of the two streams can cost at most one byte.
    assert inspect_payload(payload).body_bytes <= best + 1


def test_zero_flips_is_tiny_and_all_flips_roundtrip() -> None:
    rng = np.random.default_rng(2)
    reference = rand_layers(rng, [(10_000,), (3000,)], 0.5)
    same = roundtrip([a.copy() for a in reference], reference, "auto")
    assert inspect_payload(same).encoding == "delta"
    assert inspect_payload(same).body_bytes == 2  # flip count 0, k = 0
    inverted = [~a for a in reference]
    roundtrip(inverted, reference, "delta")
    assert inspect_payload(roundtrip(inverted, reference, "auto")).encoding == "packed"


def test_decode_does_not_touch_reference_and_outputs_are_independent() -> None:
    rng = np.random.default_rng(3)
    reference = rand_layers(rng, [(100,), (50,)], 0.5)
    saved = [a.copy() for a in reference]
    layers = flip(rng, reference, 0.1)
    payload = encode_mask(layers, fingerprint=FP, reference=reference, reference_id=1)
    out = decode_mask(payload, fingerprint=FP, layer_sizes=[100, 50], references={1: reference})
    out[0][:] = True
    out[1][:] = False
    for a, b in zip(reference, saved, strict=True):
        np.testing.assert_array_equal(a, b)


def test_accepts_bytearray_and_memoryview() -> None:
    layers = [np.array([True, False, True])]
    payload = encode_mask(layers, fingerprint=FP)
    for form in (bytearray(payload), memoryview(payload), memoryview(b"xx" + payload)[2:]):
        assert_same(decode_mask(form, fingerprint=FP, layer_sizes=[3]), layers)
        assert inspect_payload(form).layer_sizes == (3,)
    # Views of other item formats or shapes are read as their bytes (unsigned: a header byte
    # over 127 must not turn negative): signed bytes, a 2-D view, 16-bit items.
    even = [np.array([True] * 9)]  # a 30-byte payload: it also views as 15 16-bit items
    payload = encode_mask(even, fingerprint=FP)
    raw = np.frombuffer(payload, dtype=np.uint8)
    assert raw.max() > 127 and len(raw) % 2 == 0  # the CRC or fingerprint holds such a byte
    for form in (memoryview(raw.view(np.int8)), memoryview(raw.reshape(2, -1)),
                 memoryview(raw.view(np.uint16))):  # fmt: skip
        assert_same(decode_mask(form, fingerprint=FP, layer_sizes=[9]), even)
        assert inspect_payload(form).layer_sizes == (9,)


def test_a_mask_or_reference_that_is_not_bool_is_refused_by_name() -> None:
    """A float or int "mask" means a threshold was forgotten: the error says which argument
    and which layer, for the mask, a reference to encode against and a held reference."""
    good = [np.array([True, False, True])]
    bad = [np.array([1, 0, 1])]
    with pytest.raises(TypeError, match=r"^layers\[0\] must be a bool array, got dtype int"):
        encode_mask(bad, fingerprint=FP)
    with pytest.raises(TypeError, match=r"^reference\[0\] must be a bool array"):
        encode_mask(good, fingerprint=FP, reference=bad, reference_id=3)
    delta = encode_mask(good, fingerprint=FP, reference=good, reference_id=3, encoding="delta")
    with pytest.raises(TypeError, match=r"^reference\[0\] must be a bool array"):
        decode_mask(delta, fingerprint=FP, layer_sizes=[3], references={3: bad})


# ------------------------------------------------------------------------------------------
# exact layout
# ------------------------------------------------------------------------------------------


def test_golden_packed_bytes() -> None:
    payload = encode_mask([np.array([True, False, True])], fingerprint="0011223344556677")
    head = b"PMSK\x01\x00" + bytes.fromhex("0011223344556677") + b"\xff\xff\xff\xff"
    data = head + b"\x01\x03" + struct.pack("<I", 1) + b"\x05"  # bits LSB first: 1,0,1
    assert payload == data + struct.pack("<I", zlib.crc32(data))


def test_golden_delta_bytes() -> None:
    reference = [np.zeros(10, bool)]
    mask = np.zeros(10, bool)
    mask[[2, 7]] = True
    payload = encode_mask(
        [mask], fingerprint=FP, reference=reference, reference_id=9, encoding="delta"
    )
    # gaps 2, 4; cost(k=0)=8 > cost(k=1)=7 = cost(k=2) -> k=1; q=1,2; r=0,0.
    # unary "01" + "001" LSB first = 0b10010; remainders "00".
    body = b"\x02\x01\x12\x00"
    head = b"PMSK\x01\x01" + bytes.fromhex(FP) + struct.pack("<I", 9) + b"\x01\x0a"
    data = head + struct.pack("<I", len(body)) + body
    assert payload == data + struct.pack("<I", zlib.crc32(data))


def test_header_size_for_eight_layers() -> None:
    sizes = [3 * 3 * 3 * 16, 16 * 32 * 9, 32 * 64 * 9, 64 * 64 * 9, 4096 * 256, 256 * 256, 2560, 10]
    payload = encode_mask([np.zeros(s, bool) for s in sizes], fingerprint=FP)
    header = inspect_payload(payload)
    overhead = header.payload_bytes - header.body_bytes
    varints = sum(len(varint(s)) for s in sizes)
    assert overhead == 22 + 1 + varints + 4  # fixed fields, layer count, sizes, CRC
    assert overhead <= 50


def test_inspect_reports_fields() -> None:
    reference = [np.zeros(200, bool), np.ones(4, bool)]
    layers = [np.zeros(200, bool), np.ones(4, bool)]
    layers[0][3] = True
    payload = encode_mask(layers, fingerprint=FP, reference=reference, reference_id=42)
    assert inspect_payload(payload) == PayloadHeader(
        version=FORMAT_VERSION,
        encoding="delta",
        fingerprint=FP,
        reference_id=42,
        layer_sizes=(200, 4),
        # fixed fields (22, the body length among them), layer count, the size varints of
        # 200 and 4 (2 + 1 bytes), CRC: the rest is body
        body_bytes=len(payload) - (22 + 1 + 3 + 4),
        payload_bytes=len(payload),
    )
    assert ENCODINGS == ("packed", "delta")


# ------------------------------------------------------------------------------------------
# sizes
# ------------------------------------------------------------------------------------------


def test_packed_size_is_one_bit_per_param() -> None:
    n = 100_000
    payload = encode_mask([np.random.default_rng(4).random(n) < 0.5], fingerprint=FP)
    header = inspect_payload(payload)
    assert header.body_bytes == 12_500
    assert len(payload) == 12_500 + 22 + 1 + len(varint(n)) + 4


def test_delta_one_percent_near_entropy() -> None:
    n = 100_000
    rng = np.random.default_rng(5)
    reference = [rng.random(n) < 0.5]
    layers = flip(rng, reference, 0.01)
    payload = roundtrip(layers, reference, "auto")
    header = inspect_payload(payload)
    assert header.encoding == "delta"
    overhead = header.payload_bytes - header.body_bytes
    # H(0.01) = 0.081 bits/param; Rice coding should stay under 0.1.
    assert header.body_bytes < 0.1 * n / 8
    assert len(payload) < 0.1 * n / 8 + overhead


# ------------------------------------------------------------------------------------------
# corruption: every byte, every truncation, every lie
# ------------------------------------------------------------------------------------------


def small_payloads() -> dict[str, tuple[bytes, list[int], dict]]:
    rng = np.random.default_rng(6)
    reference = rand_layers(rng, [(37,), (3, 5)], 0.5)
    layers = flip(rng, reference, 0.15)
    refs = {3: reference}
    sizes = [37, 15]
    return {
        "packed": (encode_mask(layers, fingerprint=FP), sizes, refs),
        "delta": (
            encode_mask(
                layers, fingerprint=FP, reference=reference, reference_id=3, encoding="delta"
            ),
            sizes,
            refs,
        ),
    }


@pytest.mark.parametrize("kind", ["packed", "delta"])
def test_every_single_byte_corruption_is_rejected(kind: str) -> None:
    payload, sizes, refs = small_payloads()[kind]
    decode_mask(payload, fingerprint=FP, layer_sizes=sizes, references=refs)  # valid
    for i in range(len(payload)):
        for x in (0x01, 0x02, 0x10, 0x80, 0xFF):
            bad = bytearray(payload)
            bad[i] ^= x
            with pytest.raises(MaskPayloadError):
                decode_mask(bytes(bad), fingerprint=FP, layer_sizes=sizes, references=refs)
            with pytest.raises(MaskPayloadError):
                inspect_payload(bytes(bad))


@pytest.mark.parametrize("kind", ["packed", "delta"])
def test_every_truncation_and_extension_is_rejected(kind: str) -> None:
    payload, sizes, refs = small_payloads()[kind]
    for i in range(len(payload)):
        with pytest.raises(MaskPayloadError):
            decode_mask(payload[:i], fingerprint=FP, layer_sizes=sizes, references=refs)
    with pytest.raises(MaskPayloadError, match="too short"):
        decode_mask(payload[:10], fingerprint=FP, layer_sizes=sizes, references=refs)
    for extra in (b"\x00", b"\x00\x00\x00\x00", b"garbage"):
        with pytest.raises(MaskPayloadError):
            decode_mask(payload + extra, fingerprint=FP, layer_sizes=sizes, references=refs)


def packed_ok(sizes=(5, 3)) -> bytes:
    return forge(sizes=sizes, body=bytes(math.ceil(sum(sizes) / 8)))


def test_forged_valid_payload_decodes() -> None:
    """The forge helper agrees with the codec, so the lies below differ in one field only."""
    out = decode_mask(packed_ok(), fingerprint=FP, layer_sizes=[5, 3])
    assert [a.size for a in out] == [5, 3]
    ref = [np.zeros(16, bool)]
    good = forge(sizes=[16], encoding=1, ref_id=0, body=delta_body(1, 0, b"\x08"))  # flip at 3
    (got,) = decode_mask(good, fingerprint=FP, layer_sizes=[16], references={0: ref})
    assert np.flatnonzero(got).tolist() == [3]


LIES = {
    "bad magic": (dict(sizes=[5, 3], body=b"\x00", magic=b"PMSX"), "bad magic"),
    "version": (dict(sizes=[5, 3], body=b"\x00", version=2), "unsupported format version 2"),
    "encoding": (dict(sizes=[5, 3], body=b"\x00", encoding=7), "unknown encoding"),
    "fingerprint": (dict(sizes=[5, 3], body=b"\x00", fp=OTHER_FP), "prototypes differ"),
    "fewer layers": (dict(sizes=[8], body=b"\x00"), "layer count mismatch"),
    "more layers": (dict(sizes=[5, 3, 0], body=b"\x00"), "layer count mismatch"),
    "layer size": (dict(sizes=[4, 4], body=b"\x00"), "layer size mismatch: layer 0"),
    "huge layer": (dict(sizes=[2**60, 3], body=b"\x00"), "layer size mismatch"),
    "huge count": (dict(sizes=[5, 3], body=b"\x00", n_layers=2**40), "layer count"),
    "body too long": (dict(sizes=[5, 3], body=b"\x00", body_len=2), "body length mismatch"),
    "body too short": (dict(sizes=[5, 3], body=b"\x00", body_len=0), "body length mismatch"),
    "huge body": (dict(sizes=[5, 3], body=b"\x00", body_len=2**32 - 1), "body length mismatch"),
    "packed size": (dict(sizes=[5, 3], body=b"\x00\x00"), "packed body is 2 bytes"),
    "packed empty": (dict(sizes=[5, 3], body=b""), "packed body is 0 bytes"),
    "packed ref": (dict(sizes=[5, 3], body=b"\x00", ref_id=3), "packed payload carries"),
    "delta no ref": (dict(sizes=[5, 3], body=b"\x00\x00", encoding=1), "without a reference"),
    "unknown ref": (
        dict(sizes=[5, 3], body=delta_body(0, 0, b""), encoding=1, ref_id=4),
        "unknown reference id 4",
    ),
}


@pytest.mark.parametrize("name", sorted(LIES))
def test_header_lies_with_valid_crc(name: str) -> None:
    fields, message = LIES[name]
    payload = forge(**fields)
    refs = {3: [np.zeros(5, bool), np.zeros(3, bool)]}
    with pytest.raises(MaskPayloadError, match=message):
        decode_mask(payload, fingerprint=FP, layer_sizes=[5, 3], references=refs)


def test_fingerprint_message_is_actionable() -> None:
    with pytest.raises(MaskPayloadError) as info:
        decode_mask(
            forge(sizes=[5, 3], body=b"\x00", fp=OTHER_FP), fingerprint=FP, layer_sizes=[5, 3]
        )
    text = str(info.value)
    assert OTHER_FP in text and FP in text
    assert "client and server prototypes differ" in text and "regenerate" in text


def test_non_zero_padding_is_rejected() -> None:
    with pytest.raises(MaskPayloadError, match="padding"):
        decode_mask(forge(sizes=[5], body=b"\x20"), fingerprint=FP, layer_sizes=[5])
    decode_mask(forge(sizes=[5], body=b"\x1f"), fingerprint=FP, layer_sizes=[5])


DELTA_LIES = {
    # (m, k, unary, rem) -> message; 16-bit mask.
    "flip count > bits": ((17, 0, b"\xff\xff\x01"), "flip count 17 exceeds"),
    "huge flip count": ((2**60, 0, b"\x01"), "flip count"),
    "k out of range": ((1, 9, b"\x01", b"\x00\x00"), "Rice parameter k=9"),
    "k with no flips": ((0, 2, b""), "zero flips"),
    "zero flips + garbage": ((0, 0, b"\x00"), "trailing bytes"),
    "too few codes": ((2, 0, b"\x01"), "holds 1 codes, flip count says 2"),
    "too many codes": ((1, 0, b"\x03"), "holds 2 codes"),
    "trailing unary byte": ((1, 0, b"\x01\x00"), "trailing garbage"),
    "remainders missing": ((3, 4, b"\x07"), "delta body too short"),
    "position past end": ((1, 0, b"\x00\x00\x01"), "past the 16-bit mask"),
    "positions past end": ((2, 0, b"\x01\x00\x01"), "past the 16-bit mask"),
    # q = 1, 0 and r = 7, 7 with k = 3: gaps 15, 7 -> positions 15, 23; only the remainders lie.
    "remainder past end": ((2, 3, b"\x06", b"\x3f"), "position 23 out of range"),
    "remainder padding": ((1, 2, b"\x01", b"\x04"), "padding"),
}


@pytest.mark.parametrize("name", sorted(DELTA_LIES))
def test_delta_body_lies_with_valid_crc(name: str) -> None:
    fields, message = DELTA_LIES[name]
    payload = forge(sizes=[16], encoding=1, ref_id=0, body=delta_body(*fields))
    with pytest.raises(MaskPayloadError, match=message):
        decode_mask(payload, fingerprint=FP, layer_sizes=[16], references={0: [np.zeros(16, bool)]})


def test_overlong_varint_is_rejected() -> None:
    payload = forge(sizes=[], body=b"")
    # Spell the layer count 0 as two bytes (0x80 0x00) and re-checksum.
    at = 18
    bad = fix_crc(payload[:at] + b"\x80" + payload[at:])
    with pytest.raises(MaskPayloadError, match="overlong"):
        inspect_payload(bad)


@pytest.mark.parametrize("value", [None, "PMSK", 123, [1, 2], np.zeros(40, np.uint8)])
def test_non_bytes_input_is_a_payload_error(value) -> None:
    with pytest.raises(MaskPayloadError, match="must be bytes"):
        decode_mask(value, fingerprint=FP, layer_sizes=[])
    with pytest.raises(MaskPayloadError):
        inspect_payload(value)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["packed", "delta"]),
    at=st.integers(0, 10**6),
    xor=st.integers(1, 255),
)
def test_corruption_behind_a_valid_crc_never_escapes(kind, at, xor) -> None:
    """A corrupted byte under a re-computed CRC: a payload error or a well-formed mask."""
    payload, sizes, refs = small_payloads()[kind]
    bad = bytearray(payload[:-4])
    bad[at % len(bad)] ^= xor
    try:
        out = decode_mask(
            fix_crc(bytes(bad) + b"\0\0\0\0"), fingerprint=FP, layer_sizes=sizes, references=refs
        )
    except MaskPayloadError:
        return
    assert [a.size for a in out] == sizes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_payload_errors(data: bytes) -> None:
    for candidate in (data, b"PMSK\x01" + data):
        try:
            out = decode_mask(candidate, fingerprint=FP, layer_sizes=[5, 3])
        except MaskPayloadError:
            continue
        assert [a.size for a in out] == [5, 3]  # anything accepted is a well-formed mask


@settings(max_examples=300, deadline=None)
@given(
    encoding=st.integers(0, 2),
    ref_id=st.sampled_from([0, 1, NONE_ID]),
    sizes=st.sampled_from([[16], [5, 3], [1, 1000], [0], []]),
    body=st.binary(max_size=40),
)
def test_random_bodies_with_valid_crc_never_escape(encoding, ref_id, sizes, body) -> None:
    """Fuzz past the CRC into the body decoders: either a correct-size mask or a payload error."""
    payload = forge(sizes=sizes, body=body, encoding=encoding, ref_id=ref_id)
    refs = {0: [np.zeros(s, bool) for s in sizes]}
    try:
        out = decode_mask(payload, fingerprint=FP, layer_sizes=sizes, references=refs)
    except MaskPayloadError:
        return
    assert [a.size for a in out] == sizes


# ------------------------------------------------------------------------------------------
# programmer errors are not payload errors
# ------------------------------------------------------------------------------------------


def raises_plain(exc_type: type[Exception], fn, *args, **kwargs) -> None:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert not isinstance(info.value, MaskPayloadError)


def test_programmer_errors() -> None:
    layers = [np.zeros(8, bool)]
    ref = [np.zeros(8, bool)]
    raises_plain(ValueError, encode_mask, layers, fingerprint=FP, encoding="delta")
    raises_plain(ValueError, encode_mask, layers, fingerprint=FP, reference=ref)
    raises_plain(ValueError, encode_mask, layers, fingerprint=FP, reference_id=1)
    raises_plain(ValueError, encode_mask, layers, fingerprint=FP, encoding="zip")
    raises_plain(
        ValueError, encode_mask, layers, fingerprint=FP, reference=ref, reference_id=NONE_ID
    )
    raises_plain(
        ValueError,
        encode_mask,
        layers,
        fingerprint=FP,
        reference=[np.zeros(9, bool)],
        reference_id=1,
    )
    raises_plain(TypeError, encode_mask, [np.zeros(8)], fingerprint=FP)
    raises_plain(TypeError, encode_mask, np.zeros(8, bool), fingerprint=FP)
    payload = encode_mask(layers, fingerprint=FP, reference=ref, reference_id=1, encoding="delta")
    raises_plain(
        ValueError,
        decode_mask,
        payload,
        fingerprint=FP,
        layer_sizes=[8],
        references={1: [np.zeros(7, bool)]},
    )


@pytest.mark.parametrize("bad", ["0123", "0123456789abcdeg", " 123456789abcdef", "0" * 17, 5, None])
def test_fingerprint_validation(bad) -> None:
    raises_plain(ValueError, fingerprint_bytes, bad)
    raises_plain(ValueError, encode_mask, [], fingerprint=bad)
    raises_plain(ValueError, decode_mask, b"", fingerprint=bad, layer_sizes=[])


def test_fingerprint_bytes() -> None:
    assert fingerprint_bytes("0123456789ABCDEF") == bytes.fromhex(FP)
    assert len(fingerprint_bytes(FP)) == 8


# ------------------------------------------------------------------------------------------
# messages that name what is wrong (mutation audit, issue 17)
# ------------------------------------------------------------------------------------------


def test_a_padding_bit_set_in_a_packed_mask_is_named() -> None:
    # 10 mask bits in 2 body bytes: bits 10-15 are padding (little-endian bit order).
    payload = forge(sizes=[6, 4], body=bytes([0b0000_0101, 0b1000_0000]))
    with pytest.raises(MaskPayloadError, match="padding bits after the 10 bits of the packed mask"):
        decode_mask(payload, fingerprint=FP, layer_sizes=(6, 4))


def test_an_unknown_reference_lists_the_ids_this_side_holds() -> None:
    ref = [np.zeros(600, bool), np.zeros(400, bool)]
    mask = [r.copy() for r in ref]
    mask[0][[5, 300]] = True  # 2 flips of 1000 bits: the delta is far smaller than packed
    payload = encode_mask(mask, fingerprint=FP, reference=ref, reference_id=7)
    assert inspect_payload(payload).reference_id == 7
    sizes = (600, 400)
    with pytest.raises(MaskPayloadError, match=r"held ids: \[0, 3\]\)$"):
        decode_mask(payload, fingerprint=FP, layer_sizes=sizes, references={3: ref, 0: ref})
    many = dict.fromkeys(range(20, 32), ref)  # twelve ids, 7 not among them: ten are shown
    ten = ", ".join(str(i) for i in range(20, 30))
    with pytest.raises(MaskPayloadError, match=rf"held ids: \[{ten}, \.\.\.\]"):
        decode_mask(payload, fingerprint=FP, layer_sizes=sizes, references=many)
