"""Wire format for small-integer arrays (vote levels, sparse masks), range-coded with constriction.

The evolving-prototype methods send, per round, one small integer per weight: a client's
mask (0/1) up, and the round's vote level (0..Q) down. Both are very skewed (most weights
get no vote), so the honest cost is close to their empirical entropy, not 1 bit. We code
them with ``constriction``'s range coder (a well-kept Rust coder with a numpy API) under a
per-layer categorical model whose exact symbol counts travel in the header: the receiver
rebuilds the same model, so the payload costs ``n * H(histogram)`` plus a few bytes a layer.
(The mask codec in ``codec.py`` is Golomb-Rice on XOR gaps; it is the right tool for a
binary *change* against a reference both sides hold, not for multi-level symbols.)

Layout (little endian)::

    0     4   magic b"PLVL"
    4     1   format version (u8, currently 1)
    5     8   prototype fingerprint (8 raw bytes of the 16-hex-char fingerprint)
    13    4   tag (u32: the round the array belongs to, so a replayed payload is caught)
    17    1+  max level Q (varint)
    ...   1+  number of layers (varint), then per layer: size (varint) and Q+1 symbol
              counts (varints, summing to the size)
    ...   4   body length in bytes (u32, a multiple of 4: the coder's 32-bit words)
    ...   n   body: one range-coded stream, layers in order, layers with one symbol skipped
    ...   4   CRC32 of every byte before it

``decode_levels`` trusts nothing: header fields are checked against what the receiver
expects before anything is allocated, the CRC covers everything, and the decoded symbols
must reproduce the header's counts exactly. Every fault is one ``LevelsPayloadError``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import constriction
import numpy as np

# The mask codec's LEB128 writer is reused; the reader below raises this codec's own error.
from pemn_fl import framing
from pemn_fl.codec import MaskPayloadError, fingerprint_bytes
from pemn_fl.framing import varint as _varint

MAGIC = b"PLVL"
FORMAT_VERSION = 1
MAX_LEVEL = 4096  # far above any round's client count; bounds the header a sender can claim
_PREFIX = struct.Struct("<4sB8sI")
_U32 = struct.Struct("<I")


class LevelsPayloadError(MaskPayloadError):
    """A levels payload that is malformed, corrupted, or built for another prototype/round."""


def _model(counts: np.ndarray) -> constriction.stream.model.Categorical:
    # perfect=False: fast, and deterministic on both sides for the same counts.
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_levels(
    layers: Sequence[np.ndarray], *, fingerprint: str, tag: int, max_level: int
) -> bytes:
    """Encode per-layer integer arrays with values in ``[0, max_level]``."""
    if not 1 <= max_level <= MAX_LEVEL:
        raise ValueError(f"max_level must be in [1, {MAX_LEVEL}], got {max_level}")
    if not 0 <= tag < 2**32:
        raise ValueError(f"tag must fit in u32, got {tag}")
    header = bytearray(_PREFIX.pack(MAGIC, FORMAT_VERSION, fingerprint_bytes(fingerprint), tag))
    header += _varint(max_level) + _varint(len(layers))
    encoder = constriction.stream.queue.RangeEncoder()
    for layer in layers:
        flat = np.asarray(layer).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() > max_level):
            raise ValueError(f"levels must lie in [0, {max_level}]")
        symbols = flat.astype(np.int32)
        counts = np.bincount(symbols, minlength=max_level + 1)
        header += _varint(flat.size) + b"".join(_varint(int(c)) for c in counts)
        if np.count_nonzero(counts) > 1:
            encoder.encode(symbols, _model(counts))
    body = encoder.get_compressed().astype("<u4").tobytes()
    return framing.seal(bytes(header) + _U32.pack(len(body)) + body)


def decode_levels(
    payload: bytes, *, fingerprint: str, tag: int, layer_sizes: Sequence[int], max_level: int
) -> list[np.ndarray]:
    """Decode and validate; returns one flat ``int16`` array per expected layer."""
    buf = memoryview(bytes(payload)) if not isinstance(payload, bytes) else memoryview(payload)
    _check_prefix(buf, fingerprint, tag)
    reader = framing.Reader(buf, len(buf) - framing.CRC_BYTES, LevelsPayloadError,
                            start=_PREFIX.size)  # fmt: skip
    q = reader.varint("max level")
    if not 1 <= q <= max_level:
        raise LevelsPayloadError(f"max level {q} outside [1, {max_level}]")
    histograms = _histograms(reader, layer_sizes, q)
    pos = reader.pos
    if pos + _U32.size > len(buf) - 4:
        raise LevelsPayloadError("payload truncated before the body length")
    (body_len,) = _U32.unpack_from(buf, pos)
    pos += _U32.size
    if body_len % 4 or pos + body_len != len(buf) - 4:
        raise LevelsPayloadError(
            f"body length {body_len} does not match the payload ({len(buf) - 4 - pos} bytes)"
        )
    words = np.frombuffer(buf[pos : pos + body_len], dtype="<u4").astype(np.uint32)
    return _range_decode(words, layer_sizes, histograms, q)


def _check_prefix(buf: memoryview, fingerprint: str, tag: int) -> None:
    """Length, CRC, magic, version, fingerprint and round of a payload, checked in that order."""
    if len(buf) < _PREFIX.size + 2 + 2 * _U32.size:
        raise LevelsPayloadError(f"payload of {len(buf)} bytes is too short to be a levels array")
    if not framing.sealed(buf):
        raise LevelsPayloadError("CRC mismatch: the payload was corrupted in transit")
    magic, version, fp, got_tag = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise LevelsPayloadError(f"bad magic {bytes(magic)!r}: not a levels payload")
    if version != FORMAT_VERSION:
        raise LevelsPayloadError(f"unsupported levels format version {version}")
    if fp != fingerprint_bytes(fingerprint):
        raise LevelsPayloadError(
            f"fingerprint mismatch: payload built for {fp.hex()}, this side holds {fingerprint}"
        )
    if got_tag != tag:
        raise LevelsPayloadError(f"payload is for round {got_tag}, expected round {tag}")


def _histograms(reader: framing.Reader, layer_sizes: Sequence[int], q: int) -> list[np.ndarray]:
    """Each layer's symbol counts (levels 0..``q``), its size and count checked."""
    n_layers = reader.varint("layer count")
    if n_layers != len(layer_sizes):
        raise LevelsPayloadError(f"{n_layers} layers in payload, expected {len(layer_sizes)}")
    histograms = []
    for i, want in enumerate(layer_sizes):
        size = reader.varint(f"size of layer {i}")
        if size != want:
            raise LevelsPayloadError(f"layer {i} has {size} values, expected {want}")
        counts = [reader.varint(f"count of layer {i}") for _ in range(q + 1)]
        if sum(counts) != size:
            raise LevelsPayloadError(f"layer {i}: symbol counts sum to {sum(counts)}, not {size}")
        histograms.append(np.asarray(counts, dtype=np.int64))
    return histograms


def _range_decode(words: np.ndarray, layer_sizes: Sequence[int], histograms: list[np.ndarray],
                  q: int) -> list[np.ndarray]:  # fmt: skip
    """The layers' levels from the range-coded body, each layer's histogram its model."""
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        out = []
        for size, counts in zip(layer_sizes, histograms, strict=True):
            present = np.flatnonzero(counts)
            if len(present) <= 1:
                value = int(present[0]) if len(present) else 0
                out.append(np.full(size, value, dtype=np.int16))
                continue
            symbols = decoder.decode(_model(counts), int(size))
            if not np.array_equal(np.bincount(symbols, minlength=q + 1), counts):
                raise LevelsPayloadError("decoded symbols do not match the header's counts")
            out.append(symbols.astype(np.int16))
    except LevelsPayloadError:
        raise
    except Exception as exc:  # constriction raises its own errors on a bad stream
        raise LevelsPayloadError(f"range decoder failed: {exc}") from None
    return out


# -- signed integer steps --------------------------------------------------------------------
def steps_offset(layers: Sequence[np.ndarray]) -> int:
    """``m = max(1, max |x|)``: the offset ``encode_steps`` gives signed integers ``layers``."""
    m = max([1, *(int(np.abs(np.asarray(x)).max(initial=0)) for x in layers)])
    if 2 * m > MAX_LEVEL:
        raise ValueError(f"steps reach {m}, beyond the levels codec's {MAX_LEVEL // 2}")
    return m


def encode_steps(layers: Sequence[np.ndarray], *, fingerprint: str, tag: int) -> bytes:
    """Signed integers as levels offset by ``m = steps_offset(layers)`` (max level ``2m``):
    the receiver reads ``m`` back from the header, so a sum of k rounds' steps needs no field
    beside it. A payload of steps in {-1, 0, 1} is the plain ``max_level=2`` one."""
    m = steps_offset(layers)
    return encode_levels([np.asarray(x).astype(np.int64) + m for x in layers],
                         fingerprint=fingerprint, tag=tag, max_level=2 * m)  # fmt: skip


def decode_steps(payload: bytes, *, fingerprint: str, tag: int, layer_sizes: Sequence[int]
                 ) -> list[np.ndarray]:  # fmt: skip
    """``encode_steps``' integers back (int64), every check of ``decode_levels`` made."""
    buf = memoryview(bytes(payload))
    _check_prefix(buf, fingerprint, tag)
    reader = framing.Reader(buf, len(buf) - framing.CRC_BYTES, LevelsPayloadError,
                            start=_PREFIX.size)  # fmt: skip
    q = reader.varint("max level")
    if q % 2 or not 2 <= q <= MAX_LEVEL:
        raise LevelsPayloadError(
            f"max level {q}: signed steps need an even one in [2, {MAX_LEVEL}]")
    levels = decode_levels(payload, fingerprint=fingerprint, tag=tag, layer_sizes=layer_sizes,
                           max_level=q)  # fmt: skip
    return [lv.astype(np.int64) - q // 2 for lv in levels]
