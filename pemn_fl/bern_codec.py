"""Wire format for a binary mask coded against per-edge probabilities both sides hold.

A client of the carried-posterior FedPM variant samples its mask near the server's global
probabilities ``p``, which it received anyway. Coding each bit under ``Bernoulli(p_i)``
costs about the cross-entropy ``-log2 p_i(m_i)`` per edge: near zero where the client
agrees with a confident global model, instead of the ``H(mean)`` a histogram coder pays
(``levels_codec``) or the Golomb-Rice cost of a delta (``codec``). This is the coding lever
of KLMS/FedPM, done by ``constriction``'s range coder (a well-kept Rust coder; we only
write the framing).

Layout (little endian)::

    0     4   magic b"PBRN"
    4     1   format version (u8, currently 1)
    5     8   prototype fingerprint (8 raw bytes)
    13    4   tag (u32: the round, so a replayed payload is caught)
    17    4   CRC32 of the mask's bits (np.packbits of all layers): decoding under other
              probabilities than the sender's yields other bits, and this catches it
    17    1+  number of layers (varint), then each layer's size (varint)
    ...   4   body length in bytes (u32, a multiple of 4)
    ...   n   body: one range-coded stream of every bit, layers in order
    ...   4   CRC32 of every byte before it

Encoder and decoder must pass bit-identical probabilities (computed with the same float64
operations from the same replicated state); the CRC then guards the rest. Every fault is
one ``BernPayloadError``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import constriction
import numpy as np

from pemn_fl.codec import MaskPayloadError, _varint, fingerprint_bytes
from pemn_fl.levels_codec import _read_varint

MAGIC = b"PBRN"
FORMAT_VERSION = 1
PROB_FLOOR = 1e-6  # both symbols stay codable however confident the model is
_PREFIX = struct.Struct("<4sB8sII")
_U32 = struct.Struct("<I")


class BernPayloadError(MaskPayloadError):
    """A mask payload that is malformed, corrupted, or built for another model/round."""


def _family() -> constriction.stream.model.Bernoulli:
    return constriction.stream.model.Bernoulli(perfect=False)


def _bits_crc(layers: Sequence[np.ndarray]) -> int:
    flat = np.concatenate([np.asarray(a).reshape(-1) for a in layers]) if layers else []
    return zlib.crc32(np.packbits(np.asarray(flat, dtype=np.uint8)).tobytes())


def _probs(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64).reshape(-1), PROB_FLOOR, 1.0 - PROB_FLOOR)


def encode_bits(
    mask: Sequence[np.ndarray], probs: Sequence[np.ndarray], *, fingerprint: str, tag: int
) -> bytes:
    """Code per-layer 0/1 arrays under per-edge ``P(bit = 1) = probs``."""
    if len(mask) != len(probs):
        raise ValueError(f"{len(mask)} mask layers but {len(probs)} probability layers")
    if not 0 <= tag < 2**32:
        raise ValueError(f"tag must fit in u32, got {tag}")
    flats = [np.asarray(bits).reshape(-1) for bits in mask]
    check = _bits_crc(flats)
    header = bytearray(
        _PREFIX.pack(MAGIC, FORMAT_VERSION, fingerprint_bytes(fingerprint), tag, check)
    )
    header += _varint(len(mask))
    encoder = constriction.stream.queue.RangeEncoder()
    for flat, p in zip(flats, probs, strict=True):
        if flat.size != np.asarray(p).size:
            raise ValueError(f"a layer has {flat.size} bits but {np.asarray(p).size} probabilities")
        if flat.size and not np.isin(flat, (0, 1)).all():
            raise ValueError("mask values must be 0 or 1")
        header += _varint(flat.size)
        if flat.size:
            encoder.encode(flat.astype(np.int32), _family(), _probs(p))
    body = encoder.get_compressed().astype("<u4").tobytes()
    out = bytes(header) + _U32.pack(len(body)) + body
    return out + _U32.pack(zlib.crc32(out))


def decode_bits(
    payload: bytes, probs: Sequence[np.ndarray], *, fingerprint: str, tag: int
) -> list[np.ndarray]:
    """Decode and validate against the receiver's own probabilities; uint8 arrays."""
    buf = memoryview(bytes(payload))
    if len(buf) < _PREFIX.size + 1 + 2 * _U32.size:
        raise BernPayloadError(f"payload of {len(buf)} bytes is too short to be a mask")
    if zlib.crc32(buf[:-4]) != _U32.unpack_from(buf, len(buf) - 4)[0]:
        raise BernPayloadError("CRC mismatch: the payload was corrupted in transit")
    magic, version, fp, got_tag, check = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BernPayloadError(f"bad magic {bytes(magic)!r}: not a probability-coded mask")
    if version != FORMAT_VERSION:
        raise BernPayloadError(f"unsupported format version {version}")
    if fp != fingerprint_bytes(fingerprint):
        raise BernPayloadError(
            f"fingerprint mismatch: payload built for {fp.hex()}, this side holds {fingerprint}"
        )
    if got_tag != tag:
        raise BernPayloadError(f"payload is for round {got_tag}, expected round {tag}")
    pos = _PREFIX.size
    try:
        n_layers, pos = _read_varint(buf, pos)
        if n_layers != len(probs):
            raise BernPayloadError(f"{n_layers} layers in payload, expected {len(probs)}")
        for i, p in enumerate(probs):
            size, pos = _read_varint(buf, pos)
            if size != np.asarray(p).size:
                raise BernPayloadError(f"layer {i} has {size} bits, expected {np.asarray(p).size}")
    except MaskPayloadError as exc:
        raise BernPayloadError(str(exc)) from None
    if pos + _U32.size > len(buf) - 4:
        raise BernPayloadError("payload truncated before the body length")
    (body_len,) = _U32.unpack_from(buf, pos)
    pos += _U32.size
    if body_len % 4 or pos + body_len != len(buf) - 4:
        raise BernPayloadError(
            f"body length {body_len} does not match the payload ({len(buf) - 4 - pos} bytes)"
        )
    words = np.frombuffer(buf[pos : pos + body_len], dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        out = []
        for p in probs:
            n = np.asarray(p).size
            bits = decoder.decode(_family(), _probs(p)) if n else np.zeros(0, np.int32)
            out.append(bits.astype(np.uint8))
    except Exception as exc:  # constriction raises its own errors on a bad stream
        raise BernPayloadError(f"range decoder failed: {exc}") from None
    if _bits_crc(out) != check:
        raise BernPayloadError(
            "decoded mask fails its checksum: it was coded against other probabilities than "
            "this side holds (client and server state differ)"
        )
    return out
