"""The framing every pemn-fl wire format shares: varints, a bounds-checked reader, the CRC.

Three formats are written by hand (the mask codec, the levels codec, the model file), because
each byte they spend is what this project measures (a pickled or np.save'd array carries a
header per tensor and no integrity check). What they have in common lives here, once:

* ``varint``: unsigned LEB128, canonical (the shortest spelling), so a payload's bytes are a
  function of its content;
* ``Reader``: a cursor that turns every overrun, overlong varint or runaway varint into the
  format's own error class (``MaskPayloadError``, ``LevelsPayloadError``, ...), never an
  ``IndexError`` or ``struct.error`` from deep inside;
* ``seal`` / ``sealed``: a CRC32 (zlib) over every byte before it, appended little-endian.
  A CRC catches corruption in transit, not forgery; what the bytes claim is still checked.
"""

from __future__ import annotations

import struct
import zlib

U32 = struct.Struct("<I")
CRC_BYTES = U32.size
MAX_VARINT_BYTES = 10  # 70 bits: more than any real size or count; longer runs are garbage


def varint(value: int) -> bytes:
    """Unsigned LEB128: sizes and counts are usually small, so they cost 1-3 bytes."""
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Bounds-checked cursor over ``buf[start:end]``; every malformation is ``error``."""

    def __init__(self, buf: memoryview, end: int, error: type[Exception], start: int = 0) -> None:
        self.buf, self.pos, self.end, self.error = buf, start, end, error

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise self.error(
                f"payload truncated while reading {what}: need {n} bytes at offset {self.pos}, "
                f"only {max(self.end - self.pos, 0)} available"
            )
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return U32.unpack(self.take(4, what))[0]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    # Overlong encodings would give one value several spellings; the formats
                    # are canonical so that a payload's bytes are a function of its content.
                    raise self.error(f"non-canonical (overlong) varint for {what}")
                return value
        raise self.error(f"varint for {what} is longer than {MAX_VARINT_BYTES} bytes")


def seal(body: bytes) -> bytes:
    """``body`` with its CRC32 appended."""
    return body + U32.pack(zlib.crc32(body))


def sealed(buf: memoryview) -> bool:
    """Whether the last 4 bytes of ``buf`` are the CRC32 of the bytes before them."""
    return len(buf) >= CRC_BYTES and zlib.crc32(buf[:-CRC_BYTES]) == U32.unpack_from(
        buf, len(buf) - CRC_BYTES)[0]  # fmt: skip
