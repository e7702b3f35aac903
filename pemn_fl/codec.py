"""Wire format for binary masks: the only thing PEMN clients and the server exchange per round.

Every round the server sends the global mask and every client answers with its local mask, so
these bytes *are* the communication cost the project measures.  Two requirements drive the
design:

* **Tiny.**  A mask is one bit per masked weight (``packed``), and because masks change little
  between rounds the XOR against a mask both sides already hold is sparse; it is sent as
  Golomb-Rice coded gaps between flipped bits (``delta``).  ``encoding="auto"`` sends whichever is
  smaller, so a payload is never larger than the plain bit-packed mask plus the header.
* **Bullet-proof.**  A payload comes off the network, so :func:`decode_mask` trusts nothing: every
  header field is checked against what the receiver expects *before* anything is allocated from
  it, a CRC32 covers header and body, every bit of the body must be used (including zero padding),
  and every failure surfaces as :class:`MaskPayloadError` with a message saying what was wrong.

Layout (little endian)::

    offset  size  field
    0       4     magic b"PMSK"
    4       1     format version (u8, currently 1)
    5       1     encoding (u8: 0 = packed, 1 = delta)
    6       8     prototype fingerprint (8 raw bytes of the 16-hex-char fingerprint)
    14      4     reference id (u32; 0xFFFFFFFF = none; required for delta, forbidden for packed)
    18      1+    number of layers (unsigned LEB128 varint)
    ...     1+ea  bits per layer (unsigned LEB128 varints)
    ...     4     body length in bytes (u32)
    ...     n     body
    ...     4     CRC32 (zlib.crc32) of every byte before it (u32)

Framing costs 26 fixed bytes (22 of header, 4 of CRC) plus the layer count and sizes: a size
takes 1 byte below 128 bits, 2 below 16 Ki, 3 below 2 Mi, 4 below 256 Mi.  Eight layers of a
small CNN/MLP (sizes from ~10 to ~1M) cost 46 bytes in all.

Bodies (all bit streams are LSB-first within a byte, i.e. ``np.packbits(bitorder="little")`` and
``bitarray(endian="little")`` agree, and padding bits must be zero):

* ``packed``: the layers' bits concatenated (C order), ``ceil(total_bits / 8)`` bytes.
* ``delta``: ``flips = concat(mask) XOR concat(reference)``.  Body is ``varint m`` (number of
  flips), ``u8 k`` (Rice parameter), then two byte-aligned streams.  With the gap before flip
  ``i`` being ``g_i = pos_i - pos_{i-1} - 1`` (``pos_{-1} = -1``), ``q_i = g_i >> k`` and
  ``r_i = g_i & (2**k - 1)``:

  1. the unary stream: for every flip, ``q_i`` zero bits then a one bit (the terminator);
  2. the remainder stream: ``r_i`` as ``k`` bits each, LSB first, ``m * k`` bits.

  That is bit for bit the size of interleaved Rice coding (at most one byte more for the extra
  alignment), but both directions become whole-array numpy operations: terminator positions are
  a ``cumsum`` when encoding and a ``flatnonzero`` when decoding, so no Python loop ever runs
  over flips.  The length of the unary stream is implied by the body length, and it must end with
  its last terminator: no stray bytes can hide anywhere.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from bitarray import bitarray

from pemn_fl import framing

__all__ = [
    "ENCODINGS",
    "FORMAT_VERSION",
    "MaskPayloadError",
    "PayloadHeader",
    "decode_mask",
    "encode_mask",
    "fingerprint_bytes",
    "inspect_payload",
]

FORMAT_VERSION = 1
ENCODINGS = ("packed", "delta")

MAGIC = b"PMSK"
NO_REFERENCE = 0xFFFF_FFFF

_ENC_PACKED = 0
_ENC_DELTA = 1

# magic, version, encoding, fingerprint, reference id: the fixed prefix every version-1 payload has.
_PREFIX = struct.Struct("<4sBB8sI")
_U32 = struct.Struct("<I")
_CRC_BYTES = framing.CRC_BYTES
# Smallest well-formed payload: prefix, 1-byte layer count of zero, body length, empty body, CRC.
MIN_PAYLOAD_BYTES = _PREFIX.size + 1 + _U32.size + _CRC_BYTES
# Guard for int64 arithmetic while rebuilding flip positions (see _decode_delta).
_INT64_SAFE = 1 << 62
# Chunk used when searching for the last flip from the end (numpy has no fast reverse argmax).
_SCAN_CHUNK = 1 << 16

_FINGERPRINT_RE = re.compile(r"[0-9a-fA-F]{16}")


class MaskPayloadError(ValueError):
    """Any invalid payload.

    Deliberately a single exception type so that the receiver can catch exactly "this payload is
    bad" (drop the update, log, carry on) without also swallowing its own programming errors,
    which surface as plain ``ValueError``/``TypeError``.  The message says what was wrong.
    """


@dataclass(frozen=True)
class PayloadHeader:
    """Header of a structurally valid, CRC-checked payload, for logging and traffic accounting.

    ``payload_bytes - body_bytes`` is the framing overhead (header + CRC) that the accounting
    should attribute to the protocol rather than to the mask itself.
    """

    version: int
    encoding: str
    fingerprint: str
    reference_id: int | None
    layer_sizes: tuple[int, ...]
    body_bytes: int
    payload_bytes: int


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def fingerprint_bytes(fingerprint: str) -> bytes:
    """Return the 8 raw bytes of a 16-hex-char prototype fingerprint.

    Validated strictly (``bytes.fromhex`` alone would accept whitespace) because a malformed
    fingerprint is a local bug that must not turn into a payload both sides misread.
    """
    if not isinstance(fingerprint, str) or _FINGERPRINT_RE.fullmatch(fingerprint) is None:
        raise ValueError(
            f"fingerprint must be a string of exactly 16 hex characters, got {fingerprint!r}"
        )
    return bytes.fromhex(fingerprint)


def _varint(value: int) -> bytes:
    """Unsigned LEB128 (``framing.varint``)."""
    return framing.varint(value)


def _Reader(buf: memoryview, end: int) -> framing.Reader:  # noqa: N802 - was a class here
    """Bounds-checked cursor over the payload; every overrun becomes a MaskPayloadError."""
    return framing.Reader(buf, end, MaskPayloadError)


def _as_buffer(payload: object) -> memoryview:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MaskPayloadError(
            f"payload must be bytes, bytearray or memoryview, got {type(payload).__name__}"
        )
    try:
        view = memoryview(payload)
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    except (TypeError, ValueError) as exc:  # non-contiguous or exotic buffers
        raise MaskPayloadError(f"payload buffer is not a contiguous byte buffer: {exc}") from exc


def _as_layers(layers: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Validate a per-layer mask and return its layers as flat (C-order) bool arrays.

    Non-bool arrays are refused rather than cast: a float or int "mask" reaching the codec means
    the caller forgot a threshold, and silently sending ``x != 0`` would hide that bug.
    """
    if isinstance(layers, np.ndarray):
        raise TypeError(f"{what} must be a sequence of arrays (one per layer), not one ndarray")
    arrays = [np.asarray(layer) for layer in layers]
    for i, arr in enumerate(arrays):
        if arr.dtype != np.bool_:
            raise TypeError(f"{what}[{i}] must be a bool array, got dtype {arr.dtype}")
    return [arr.reshape(-1) for arr in arrays]


def _sizes(arrays: Sequence[np.ndarray]) -> list[int]:
    return [int(arr.size) for arr in arrays]


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One freshly allocated flat array (never a view of the caller's data: we write into it)."""
    out = np.empty(sum(_sizes(arrays)), dtype=np.bool_)
    if arrays:
        np.concatenate(arrays, out=out)
    return out


def _split(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Per-layer views into one freshly allocated array (non-overlapping, so safe to mutate)."""
    bounds = np.cumsum(sizes[:-1]) if len(sizes) > 1 else []
    return list(np.split(flat, bounds)) if sizes else []


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------


def _assemble(
    encoding: int, fp: bytes, reference_id: int, sizes: Sequence[int], body: bytes
) -> bytes:
    if len(body) > 0xFFFF_FFFF:
        raise ValueError(f"body of {len(body)} bytes does not fit the u32 length field")
    head = b"".join(
        [
            _PREFIX.pack(MAGIC, FORMAT_VERSION, encoding, fp, reference_id),
            _varint(len(sizes)),
            *(_varint(s) for s in sizes),
            _U32.pack(len(body)),
        ]
    )
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join([head, body, _U32.pack(crc)])


def _packed_body(flat: np.ndarray) -> bytes:
    # np.packbits rather than bitarray.pack here: measured ~30x faster on 10M bits, and it
    # produces exactly the little-endian bit order bitarray uses elsewhere in this module.
    return np.packbits(flat, bitorder="little").tobytes()


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Zero-run lengths before each set bit: ``pos[i] - pos[i-1] - 1`` with ``pos[-1] = -1``.

    Written with ``out=`` instead of ``np.diff(prepend=...)``, which concatenates first and was
    the slowest step for dense flips.
    """
    gaps = np.empty(positions.size, dtype=np.int64)
    if positions.size:
        gaps[0] = positions[0]
        np.subtract(positions[1:], positions[:-1], out=gaps[1:])
        gaps[1:] -= 1
    return gaps


def _uint_for(bits: int) -> type[np.unsignedinteger]:
    """Narrowest unsigned dtype for k-bit remainders: bit-plane loops touch fewer bytes."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if bits <= np.iinfo(dtype).bits:
            return dtype
    return np.uint64


def _delta_body_len(m: int, unary_bits: int, rem_bits: int) -> int:
    return len(_varint(m)) + 1 + (unary_bits + 7) // 8 + (rem_bits + 7) // 8


def _delta_lower_bound(m: int, gap_sum: int, total: int) -> int:
    """A provable lower bound on the delta body size (bytes) over *every* Rice parameter.

    ``floor(g / 2**k) >= (g - 2**k + 1) / 2**k`` summed over the gaps bounds the unary stream from
    the gap total alone, so ``auto`` can skip locating every flip when a delta cannot beat
    ``packed`` anyway (more than about half the bits flipped).
    """
    best = None
    for k in range(total.bit_length() + 1):
        quotients = max(0, -(-(gap_sum - m * ((1 << k) - 1)) // (1 << k)))
        size = _delta_body_len(m, m + quotients, m * k)
        best = size if best is None else min(best, size)
    return 0 if best is None else best


def _last_true(flags: np.ndarray) -> int:
    """Index of the last True (or -1), scanning chunks from the end.

    ``np.argmax(flags[::-1])`` takes ~50 ms on 10M elements (negative stride defeats the fast
    path); flips are spread out in practice, so the last chunk almost always has one.
    """
    for stop in range(flags.size, 0, -_SCAN_CHUNK):
        start = max(0, stop - _SCAN_CHUNK)
        chunk = flags[start:stop]
        if chunk.any():
            return start + int(np.flatnonzero(chunk)[-1])
    return -1


@dataclass(frozen=True)
class _DeltaPlan:
    """Everything needed to size a delta body exactly, before spending time on writing it."""

    gaps: np.ndarray
    scratch: np.ndarray  # same shape/dtype as gaps: reused so big temporaries are not re-faulted
    k: int
    unary_bits: int
    rem_bits: int

    @property
    def body_len(self) -> int:
        return _delta_body_len(int(self.gaps.size), self.unary_bits, self.rem_bits)


def _flip_positions(flips_buf: np.ndarray, total: int, m: int) -> np.ndarray:
    """``np.flatnonzero(flips_buf[:total])``, steered onto numpy's fast path.

    numpy's 1-D bool ``nonzero`` runs a memchr-driven loop while at most a tenth of the elements
    are set and a branchless loop above that; at 3-10 % density the former is ~3x slower (14 ms
    vs 4.5 ms on 10M bits, and 10 % flips is a benchmark row).  Setting enough spare elements
    after the mask pushes the density over the threshold; those positions sort last and are cut.
    """
    pad = (total - 10 * m) // 9 + 1
    if 0.03 * total < m and 0 < pad <= flips_buf.size - total:
        flips_buf[total : total + pad] = True
        return np.flatnonzero(flips_buf[: total + pad])[:m]
    return np.flatnonzero(flips_buf[:total])


def _plan_delta(flips_buf: np.ndarray, total: int, m: int) -> _DeltaPlan:
    """Gaps and the Rice parameter with the fewest bits for *this* message.

    The cost ``m * (k + 1) + sum(g >> k)`` is convex in ``k``: raising ``k`` saves
    ``sum(ceil(x / 2))`` with ``x = g >> k``, which can only shrink as ``k`` grows.  So walking
    downhill from the textbook estimate ``round(log2(ln2 * mean_gap))`` (optimal for geometric
    gaps) reaches the exact minimum, usually after 2-3 vectorised passes; ``sum(g >> 0)`` is the
    gap total and needs none.  ``flips_buf[:total]`` holds the ``m`` flips; the rest is scratch.
    """
    if m == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _DeltaPlan(empty, empty, 0, 0, 0)
    positions = _flip_positions(flips_buf, total, m)
    gap_sum = int(positions[-1]) + 1 - m
    # int64 throughout: int32 measured no faster, since fancy indexing converts to intp anyway.
    gaps = _gaps(positions)
    del positions
    scratch = np.empty_like(gaps)
    k_max = total.bit_length()  # any larger k only adds remainder bits
    costs: dict[int, int] = {}

    def cost(k: int) -> int:
        if k not in costs:
            quotients = gap_sum if k == 0 else int(np.right_shift(gaps, k, out=scratch).sum())
            costs[k] = m * (k + 1) + quotients
        return costs[k]

    mean_gap = gap_sum / m
    k = min(k_max, max(0, round(math.log2(math.log(2) * mean_gap)))) if mean_gap > 0 else 0
    step = 1 if k < k_max and cost(k + 1) < cost(k) else -1
    while 0 <= k + step <= k_max and cost(k + step) < cost(k):
        k += step
    return _DeltaPlan(gaps, scratch, k, m + costs[k] - m * (k + 1), m * k)


def _delta_body(plan: _DeltaPlan) -> bytes:
    gaps, scratch, k = plan.gaps, plan.scratch, plan.k
    m = int(gaps.size)
    # Unary stream: q_i zeros then a one, so terminator i sits at sum_{j<=i}(q_j + 1) - 1.
    unary = np.zeros(((plan.unary_bits + 7) // 8) * 8, dtype=np.bool_)
    if m:
        term = np.right_shift(gaps, k, out=scratch)
        term += 1
        np.cumsum(term, out=term)
        term -= 1
        unary[term] = True
    parts = [_varint(m), bytes([k]), np.packbits(unary, bitorder="little").tobytes()]
    if k:
        # Remainder stream, one bit plane at a time (k strided passes over m small integers),
        # in the narrowest dtype that holds k bits.
        rem = np.bitwise_and(gaps, (1 << k) - 1, out=scratch).astype(_uint_for(k))
        bits = np.empty((m, k), dtype=np.uint8)
        one = rem.dtype.type(1)
        for j in range(k):
            np.bitwise_and(rem >> rem.dtype.type(j), one, out=bits[:, j], casting="unsafe")
        parts.append(np.packbits(bits.reshape(-1), bitorder="little").tobytes())
    body = b"".join(parts)
    assert len(body) == plan.body_len
    return body


def encode_mask(
    layers: Sequence[np.ndarray],
    *,
    fingerprint: str,
    reference: Sequence[np.ndarray] | None = None,
    reference_id: int | None = None,
    encoding: str = "auto",
) -> bytes:
    """Serialise a multi-layer bool mask into a self-checking payload.

    ``encoding="auto"`` returns the smaller of ``packed`` and (when a reference is given)
    ``delta``; ties go to ``packed`` because it does not depend on the receiver holding the
    reference.  Bad arguments are programming errors and raise ``ValueError``/``TypeError``, never
    :class:`MaskPayloadError`.
    """
    if encoding not in (*ENCODINGS, "auto"):
        raise ValueError(f"encoding must be one of {(*ENCODINGS, 'auto')}, got {encoding!r}")
    fp = fingerprint_bytes(fingerprint)
    if (reference is None) != (reference_id is None):
        raise ValueError("reference and reference_id must be given together (or neither)")
    if encoding == "delta" and reference is None:
        raise ValueError("encoding='delta' needs reference and reference_id")
    if reference_id is not None and (
        isinstance(reference_id, bool)
        or not isinstance(reference_id, int | np.integer)
        or not 0 <= int(reference_id) < NO_REFERENCE
    ):
        raise ValueError(
            f"reference_id must be an int in [0, {NO_REFERENCE - 1}], got {reference_id!r}"
        )

    arrays = _as_layers(layers, "layers")
    sizes = _sizes(arrays)
    total = sum(sizes)
    # Header size does not depend on the encoding (the reference id field is always there), so
    # comparing body lengths compares payload lengths.
    packed_len = (total + 7) // 8

    def packed() -> bytes:
        return _assemble(_ENC_PACKED, fp, NO_REFERENCE, sizes, _packed_body(_concat(arrays)))

    if reference is None:
        return packed()
    ref_arrays = _as_layers(reference, "reference")
    if _sizes(ref_arrays) != sizes:
        raise ValueError(
            f"reference layer sizes {_sizes(ref_arrays)} differ from mask layer sizes {sizes}"
        )
    if encoding == "packed":
        return packed()
    assert reference_id is not None

    # XOR layer by layer straight into one buffer: neither mask nor reference is concatenated.
    # The spare tail of total/10 elements is scratch for _flip_positions.
    flips_buf = np.empty(total + total // 10 + 1, dtype=np.bool_)
    offset = 0
    for arr, ref in zip(arrays, ref_arrays, strict=True):
        np.bitwise_xor(arr, ref, out=flips_buf[offset : offset + arr.size])
        offset += arr.size
    flips = flips_buf[:total]
    m = int(np.count_nonzero(flips))
    if (
        encoding == "auto"
        and m
        and _delta_lower_bound(m, _last_true(flips) + 1 - m, total) >= packed_len
    ):
        return packed()
    plan = _plan_delta(flips_buf, total, m)
    if encoding == "auto" and packed_len <= plan.body_len:
        return packed()
    return _assemble(_ENC_DELTA, fp, int(reference_id), sizes, _delta_body(plan))


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


@contextmanager
def _payload_errors() -> Iterator[None]:
    """Re-raise anything a payload provokes as MaskPayloadError.

    Every check should fire before numpy or struct can object, but the contract is that a payload
    never escapes as another exception type, so this is the backstop rather than the mechanism.
    """
    try:
        yield
    except MaskPayloadError:
        raise
    except Exception as exc:
        raise MaskPayloadError(f"malformed payload: {type(exc).__name__}: {exc}") from exc


def _parse(payload: object) -> tuple[PayloadHeader, memoryview]:
    """Structural parse + CRC + self-consistency; nothing compared to receiver expectations."""
    with _payload_errors():
        return _parse_unguarded(payload)


def _parse_unguarded(payload: object) -> tuple[PayloadHeader, memoryview]:
    buf = _as_buffer(payload)
    n = len(buf)
    if n < MIN_PAYLOAD_BYTES:
        raise MaskPayloadError(
            f"payload too short: {n} bytes, a valid payload has at least {MIN_PAYLOAD_BYTES}"
        )
    if bytes(buf[:4]) != MAGIC:
        raise MaskPayloadError(
            f"bad magic {bytes(buf[:4])!r}, expected {MAGIC!r}: not a mask payload"
        )
    version = buf[4]
    if version != FORMAT_VERSION:
        # Checked before the CRC: a future version may lay out (and checksum) differently.
        raise MaskPayloadError(
            f"unsupported format version {version} (this codec reads version {FORMAT_VERSION})"
        )

    reader = _Reader(buf, n - _CRC_BYTES)
    _, _, enc_code, fp_raw, ref_raw = _PREFIX.unpack(reader.take(_PREFIX.size, "fixed header"))
    n_layers = reader.varint("layer count")
    if n_layers > reader.end - reader.pos:
        # Each size needs at least one byte; refuse before looping over a hostile count.
        raise MaskPayloadError(
            f"layer count {n_layers} cannot fit in the remaining {reader.end - reader.pos} bytes"
        )
    sizes = tuple(reader.varint(f"size of layer {i}") for i in range(n_layers))
    body_len = reader.u32("body length")
    expected_len = reader.pos + body_len + _CRC_BYTES
    if expected_len != n:
        raise MaskPayloadError(
            f"body length mismatch: header declares a {body_len}-byte body, so the payload should "
            f"be {expected_len} bytes, but it is {n} (truncated or trailing bytes)"
        )
    body = buf[reader.pos : reader.pos + body_len]

    stored_crc = _U32.unpack(buf[n - _CRC_BYTES :])[0]
    actual_crc = zlib.crc32(buf[: n - _CRC_BYTES])
    if stored_crc != actual_crc:
        raise MaskPayloadError(
            f"CRC mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x} "
            "(payload corrupted in transit)"
        )

    if enc_code >= len(ENCODINGS):
        raise MaskPayloadError(f"unknown encoding code {enc_code} (known: {list(ENCODINGS)})")
    encoding = ENCODINGS[enc_code]
    reference_id = None if ref_raw == NO_REFERENCE else ref_raw
    if encoding == "delta" and reference_id is None:
        raise MaskPayloadError("delta payload without a reference id")
    if encoding == "packed" and reference_id is not None:
        raise MaskPayloadError(f"packed payload carries reference id {reference_id}; must be none")

    header = PayloadHeader(
        version=version,
        encoding=encoding,
        fingerprint=bytes(fp_raw).hex(),
        reference_id=reference_id,
        layer_sizes=sizes,
        body_bytes=body_len,
        payload_bytes=n,
    )
    return header, body


def inspect_payload(payload: bytes | bytearray | memoryview) -> PayloadHeader:
    """Parse and validate header and CRC only (for logging / accounting); the body is not decoded.

    Raises :class:`MaskPayloadError` for anything structurally wrong, but does not know what the
    receiver expects, so fingerprint and layer sizes are reported, not judged.
    """
    header, _ = _parse(payload)
    return header


def _bits_view(chunk: memoryview) -> bitarray:
    """Zero-copy bitarray over received bytes: popcount / find validate without unpacking."""
    return bitarray(buffer=chunk, endian="little")


def _check_padding(chunk: memoryview, used_bits: int, what: str) -> None:
    if _bits_view(chunk).find(1, used_bits) != -1:
        raise MaskPayloadError(f"non-zero padding bits after the {used_bits} bits of the {what}")


def _decode_packed(body: memoryview, total: int) -> np.ndarray:
    need = (total + 7) // 8
    if len(body) != need:
        raise MaskPayloadError(
            f"packed body is {len(body)} bytes, {total} bits need exactly {need}"
        )
    _check_padding(body, total, "packed mask")
    return np.unpackbits(np.frombuffer(body, dtype=np.uint8), count=total, bitorder="little").view(
        np.bool_
    )


def _decode_delta(body: memoryview, total: int, ref_flat: np.ndarray) -> np.ndarray:
    """Apply the coded flips to ``ref_flat`` in place (the caller passes a private copy)."""
    reader = _Reader(body, len(body))
    m = reader.varint("flip count")
    if m > total:
        raise MaskPayloadError(f"flip count {m} exceeds the {total} bits of the mask")
    k = reader.u8("Rice parameter")
    if k > total.bit_length():
        raise MaskPayloadError(f"Rice parameter k={k} out of range for a {total}-bit mask")
    if m == 0 and k != 0:
        raise MaskPayloadError(f"Rice parameter k={k} with zero flips (must be 0)")

    rem_bits = m * k
    rem_len = (rem_bits + 7) // 8
    unary_len = reader.end - reader.pos - rem_len
    if unary_len < 0:
        raise MaskPayloadError(
            f"delta body too short: {m} remainders of {k} bits need {rem_len} bytes, "
            f"only {reader.end - reader.pos} left"
        )
    unary = reader.take(unary_len, "unary stream")
    rem = reader.take(rem_len, "remainder stream")

    # Validate the unary stream on a bitarray view before allocating anything from it.
    unary_view = _bits_view(unary)
    terminators = unary_view.count(1)
    if terminators != m:
        raise MaskPayloadError(f"unary stream holds {terminators} codes, flip count says {m}")
    if m == 0:
        if unary_len:
            raise MaskPayloadError(f"zero flips but {unary_len} trailing bytes in the delta body")
        return ref_flat
    last_bit = unary_view.find(1, right=True)
    if last_bit // 8 != unary_len - 1:
        raise MaskPayloadError(
            f"trailing garbage: unary stream ends at bit {last_bit} but spans {unary_len} bytes"
        )
    sum_q = last_bit + 1 - m
    # Every running sum below is sum(q << k) + sum(r) + count <= (sum_q + m) << k, and the last
    # one is >= (sum_q << k) + m: reject what must overrun the mask or could wrap int64.
    if (sum_q << k) + m > total or (sum_q + m) << k >= _INT64_SAFE:
        raise MaskPayloadError(f"decoded flip positions run past the {total}-bit mask")
    _check_padding(rem, rem_bits, "remainder stream")

    # .view(bool): numpy's fast nonzero path exists for bool only (uint8 is ~10x slower).
    unary_bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8), bitorder="little")
    term = np.flatnonzero(unary_bits.view(np.bool_))
    gaps = _gaps(term)  # quotients q_i
    del term
    if k:
        gaps <<= k
        # Remainders back from bit planes, accumulated in the narrowest dtype, then merged.
        bits = np.unpackbits(
            np.frombuffer(rem, dtype=np.uint8), count=rem_bits, bitorder="little"
        ).reshape(m, k)
        acc = _uint_for(k)
        rem_vals = bits[:, 0].astype(acc)
        for j in range(1, k):
            rem_vals |= bits[:, j].astype(acc) << acc(j)
        gaps |= rem_vals
    # positions = cumsum(g + 1) - 1, in place.
    gaps += 1
    positions = np.cumsum(gaps, out=gaps)
    positions -= 1
    if int(positions[-1]) >= total:
        raise MaskPayloadError(
            f"decoded flip position {int(positions[-1])} out of range for a {total}-bit mask"
        )
    ref_flat[positions] ^= True
    return ref_flat


def decode_mask(
    payload: bytes | bytearray | memoryview,
    *,
    fingerprint: str,
    layer_sizes: Sequence[int],
    references: Mapping[int, Sequence[np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Decode and fully validate a payload into flat bool arrays, one per expected layer.

    Anything wrong with the payload raises :class:`MaskPayloadError`; nothing is allocated from
    header values until they have been compared with ``layer_sizes``, so a hostile header cannot
    cause a huge allocation.  A wrong local argument (malformed fingerprint, a reference whose
    sizes differ from ``layer_sizes``, a non-bool reference) is a programming error and raises
    ``ValueError``/``TypeError``.  The returned arrays are views into one new buffer: they do
    not share memory with the payload, the references, or each other.
    """
    fp = fingerprint_bytes(fingerprint)
    expected = [int(s) for s in layer_sizes]
    if any(s < 0 for s in expected):
        raise ValueError(f"layer_sizes must be non-negative, got {expected}")

    header, body = _parse(payload)
    if header.fingerprint != fp.hex():
        raise MaskPayloadError(
            f"fingerprint mismatch: payload was built for prototype {header.fingerprint}, "
            f"this side holds {fp.hex()}; the client and server prototypes differ - "
            "regenerate both from the same spec (model, width, init, seed)"
        )
    if len(header.layer_sizes) != len(expected):
        raise MaskPayloadError(
            f"layer count mismatch: payload has {len(header.layer_sizes)} layers, "
            f"expected {len(expected)}"
        )
    for i, (got, want) in enumerate(zip(header.layer_sizes, expected, strict=True)):
        if got != want:
            raise MaskPayloadError(
                f"layer size mismatch: layer {i} has {got} bits, expected {want}"
            )
    total = sum(expected)

    if header.encoding == "packed":
        with _payload_errors():
            flat = _decode_packed(body, total)
    else:
        assert header.reference_id is not None
        if references is None or header.reference_id not in references:
            held = sorted(references) if references else []
            shown = ", ".join(map(str, held[:10])) + (", ..." if len(held) > 10 else "")
            raise MaskPayloadError(
                f"unknown reference id {header.reference_id}: delta payload refers to a mask "
                f"this side does not hold (held ids: [{shown}])"
            )
        # Outside the guard: a bad local reference is our bug, not the sender's.
        ref_arrays = _as_layers(references[header.reference_id], "reference")
        ref_sizes = _sizes(ref_arrays)
        if ref_sizes != expected:
            raise ValueError(
                f"local reference {header.reference_id} has layer sizes {ref_sizes}, "
                f"expected {expected}"
            )
        with _payload_errors():
            flat = _decode_delta(body, total, _concat(ref_arrays))
    return _split(flat, expected)
