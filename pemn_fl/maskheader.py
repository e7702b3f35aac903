"""The mask payload's frame: the header that says what a body is, its length and the CRC32
over both, written (``assemble``) and read (``parse``, ``inspect_payload``). What the bodies
hold is ``pemn_fl.codec``'s (packed) and ``pemn_fl.rice``'s (delta).

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
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pemn_fl import framing
from pemn_fl.errors import MaskPayloadError

FORMAT_VERSION = 1
ENCODINGS = ("packed", "delta")

MAGIC = b"PMSK"
NO_REFERENCE = 0xFFFF_FFFF

ENC_PACKED = 0
ENC_DELTA = 1

# magic, version, encoding, fingerprint, reference id: the fixed prefix every version-1 payload has.
_PREFIX = struct.Struct("<4sBB8sI")
_U32 = struct.Struct("<I")
_CRC_BYTES = framing.CRC_BYTES
# Smallest well-formed payload: prefix, 1-byte layer count of zero, body length, empty body, CRC.
MIN_PAYLOAD_BYTES = _PREFIX.size + 1 + _U32.size + _CRC_BYTES

_FINGERPRINT_RE = re.compile(r"[0-9a-fA-F]{16}")


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


def assemble(
    encoding: int, fp: bytes, reference_id: int, sizes: Sequence[int], body: bytes
) -> bytes:
    """A payload: the header (``encoding`` is ``ENC_PACKED`` or ``ENC_DELTA``), ``body`` and
    the CRC32 of both."""
    if len(body) > 0xFFFF_FFFF:
        raise ValueError(f"body of {len(body)} bytes does not fit the u32 length field")
    head = b"".join(
        [
            _PREFIX.pack(MAGIC, FORMAT_VERSION, encoding, fp, reference_id),
            framing.varint(len(sizes)),
            *(framing.varint(s) for s in sizes),
            _U32.pack(len(body)),
        ]
    )
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join([head, body, _U32.pack(crc)])


@contextmanager
def payload_errors() -> Iterator[None]:
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


def parse(payload: object) -> tuple[PayloadHeader, memoryview]:
    """Structural parse + CRC + self-consistency; nothing compared to receiver expectations."""
    with payload_errors():
        return _parse_unguarded(payload)


def _parse_unguarded(payload: object) -> tuple[PayloadHeader, memoryview]:
    buf = _as_buffer(payload)
    n = len(buf)
    version = _check_prefix(buf)
    reader = framing.Reader(buf, n - _CRC_BYTES, MaskPayloadError)  # overruns: payload errors
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
    encoding, reference_id = _encoding_of(enc_code, ref_raw)
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


def _check_prefix(buf: memoryview) -> int:
    """The length, magic and version of a payload checked; its version."""
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
    return version


def _encoding_of(enc_code: int, ref_raw: int) -> tuple[str, int | None]:
    """The encoding and reference id a header names, checked against each other."""
    if enc_code >= len(ENCODINGS):
        raise MaskPayloadError(f"unknown encoding code {enc_code} (known: {list(ENCODINGS)})")
    encoding = ENCODINGS[enc_code]
    reference_id = None if ref_raw == NO_REFERENCE else ref_raw
    if encoding == "delta" and reference_id is None:
        raise MaskPayloadError("delta payload without a reference id")
    if encoding == "packed" and reference_id is not None:
        raise MaskPayloadError(f"packed payload carries reference id {reference_id}; must be none")
    return encoding, reference_id


def inspect_payload(payload: bytes | bytearray | memoryview) -> PayloadHeader:
    """Parse and validate header and CRC only (for logging / accounting); the body is not decoded.

    Raises :class:`MaskPayloadError` for anything structurally wrong, but does not know what the
    receiver expects, so fingerprint and layer sizes are reported, not judged.
    """
    header, _ = parse(payload)
    return header
