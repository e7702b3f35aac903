"""The ``delta`` body of the mask codec: the flips between a mask and its reference as
Golomb-Rice coded gaps, written and read as whole-array numpy operations (the layout below;
the payload around it is in ``pemn_fl.codec``'s docstring).

``plan`` sizes a body exactly for the Rice parameter with the fewest bits before anything is
written (``lower_bound`` tells, from the flip count and gap total alone, when no parameter can
beat the packed mask); ``encode`` writes the planned body; ``decode`` validates a received
body against the mask's size before allocating from it and applies its flips to the
reference. Every malformation is a ``MaskPayloadError``.

Layout: ``flips = concat(mask) XOR concat(reference)``.  Body is ``varint m`` (number of
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
from dataclasses import dataclass

import numpy as np
from bitarray import bitarray

from pemn_fl import framing
from pemn_fl.errors import MaskPayloadError

# Guard for int64 arithmetic while rebuilding flip positions (see _decode_delta).
INT64_SAFE = 1 << 62


# Chunk used when searching for the last flip from the end (numpy has no fast reverse argmax).
SCAN_CHUNK = 1 << 16


def gaps_of(positions: np.ndarray) -> np.ndarray:
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


def uint_for(bits: int) -> type[np.unsignedinteger]:
    """Narrowest unsigned dtype for k-bit remainders: bit-plane loops touch fewer bytes."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if bits <= np.iinfo(dtype).bits:
            return dtype
    return np.uint64


def body_len(m: int, unary_bits: int, rem_bits: int) -> int:
    return len(framing.varint(m)) + 1 + (unary_bits + 7) // 8 + (rem_bits + 7) // 8


def lower_bound(m: int, gap_sum: int, total: int) -> int:
    """A provable lower bound on the delta body size (bytes) over *every* Rice parameter.

    ``floor(g / 2**k) >= (g - 2**k + 1) / 2**k`` summed over the gaps bounds the unary stream from
    the gap total alone, so ``auto`` can skip locating every flip when a delta cannot beat
    ``packed`` anyway (more than about half the bits flipped).
    """
    best = None
    for k in range(total.bit_length() + 1):
        quotients = max(0, -(-(gap_sum - m * ((1 << k) - 1)) // (1 << k)))
        size = body_len(m, m + quotients, m * k)
        best = size if best is None else min(best, size)
    return 0 if best is None else best


def last_true(flags: np.ndarray) -> int:
    """Index of the last True (or -1), scanning chunks from the end.

    ``np.argmax(flags[::-1])`` takes ~50 ms on 10M elements (negative stride defeats the fast
    path); flips are spread out in practice, so the last chunk almost always has one.
    """
    for stop in range(flags.size, 0, -SCAN_CHUNK):
        start = max(0, stop - SCAN_CHUNK)
        chunk = flags[start:stop]
        if chunk.any():
            return start + int(np.flatnonzero(chunk)[-1])
    return -1


@dataclass(frozen=True)
class DeltaPlan:
    """Everything needed to size a delta body exactly, before spending time on writing it."""

    gaps: np.ndarray
    scratch: np.ndarray  # same shape/dtype as gaps: reused so big temporaries are not re-faulted
    k: int
    unary_bits: int
    rem_bits: int

    @property
    def body_len(self) -> int:
        return body_len(int(self.gaps.size), self.unary_bits, self.rem_bits)


def flip_positions(flips_buf: np.ndarray, total: int, m: int) -> np.ndarray:
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


def plan(flips_buf: np.ndarray, total: int, m: int) -> DeltaPlan:
    """Gaps and the Rice parameter with the fewest bits for *this* message.

    The cost ``m * (k + 1) + sum(g >> k)`` is convex in ``k``: raising ``k`` saves
    ``sum(ceil(x / 2))`` with ``x = g >> k``, which can only shrink as ``k`` grows.  So walking
    downhill from the textbook estimate ``round(log2(ln2 * mean_gap))`` (optimal for geometric
    gaps) reaches the exact minimum, usually after 2-3 vectorised passes; ``sum(g >> 0)`` is the
    gap total and needs none.  ``flips_buf[:total]`` holds the ``m`` flips; the rest is scratch.
    """
    if m == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DeltaPlan(empty, empty, 0, 0, 0)
    positions = flip_positions(flips_buf, total, m)
    gap_sum = int(positions[-1]) + 1 - m
    # int64 throughout: int32 measured no faster, since fancy indexing converts to intp anyway.
    gaps = gaps_of(positions)
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
    return DeltaPlan(gaps, scratch, k, m + costs[k] - m * (k + 1), m * k)


def encode(plan: DeltaPlan) -> bytes:
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
    parts = [framing.varint(m), bytes([k]), np.packbits(unary, bitorder="little").tobytes()]
    if k:
        # Remainder stream, one bit plane at a time (k strided passes over m small integers),
        # in the narrowest dtype that holds k bits.
        rem = np.bitwise_and(gaps, (1 << k) - 1, out=scratch).astype(uint_for(k))
        bits = np.empty((m, k), dtype=np.uint8)
        one = rem.dtype.type(1)
        for j in range(k):
            np.bitwise_and(rem >> rem.dtype.type(j), one, out=bits[:, j], casting="unsafe")
        parts.append(np.packbits(bits.reshape(-1), bitorder="little").tobytes())
    body = b"".join(parts)
    assert len(body) == plan.body_len
    return body


def bits_view(chunk: memoryview) -> bitarray:
    """Zero-copy bitarray over received bytes: popcount / find validate without unpacking."""
    return bitarray(buffer=chunk, endian="little")


def check_padding(chunk: memoryview, used_bits: int, what: str) -> None:
    if bits_view(chunk).find(1, used_bits) != -1:
        raise MaskPayloadError(f"non-zero padding bits after the {used_bits} bits of the {what}")


def decode(body: memoryview, total: int, ref_flat: np.ndarray) -> np.ndarray:
    """Apply the coded flips to ``ref_flat`` in place (the caller passes a private copy)."""
    m, k, unary, rem = _streams(body, total)
    # Validate the unary stream on a bitarray view before allocating anything from it.
    unary_view = bits_view(unary)
    terminators = unary_view.count(1)
    if terminators != m:
        raise MaskPayloadError(f"unary stream holds {terminators} codes, flip count says {m}")
    if m == 0:
        if len(unary):
            raise MaskPayloadError(f"zero flips but {len(unary)} trailing bytes in the delta body")
        return ref_flat
    _check_span(unary_view, len(unary), m, k, total)
    check_padding(rem, m * k, "remainder stream")
    positions = _positions(unary, rem, m, k)
    if int(positions[-1]) >= total:
        raise MaskPayloadError(
            f"decoded flip position {int(positions[-1])} out of range for a {total}-bit mask"
        )
    ref_flat[positions] ^= True
    return ref_flat


def _streams(body: memoryview, total: int) -> tuple[int, int, memoryview, memoryview]:
    """The flip count ``m``, the Rice parameter ``k`` and the unary and remainder streams of a
    delta body, their lengths checked against each other and the mask."""
    reader = framing.Reader(body, len(body), MaskPayloadError)
    m = reader.varint("flip count")
    if m > total:
        raise MaskPayloadError(f"flip count {m} exceeds the {total} bits of the mask")
    k = reader.u8("Rice parameter")
    if k > total.bit_length():
        raise MaskPayloadError(f"Rice parameter k={k} out of range for a {total}-bit mask")
    if m == 0 and k != 0:
        raise MaskPayloadError(f"Rice parameter k={k} with zero flips (must be 0)")
    rem_len = (m * k + 7) // 8
    unary_len = reader.end - reader.pos - rem_len
    if unary_len < 0:
        raise MaskPayloadError(
            f"delta body too short: {m} remainders of {k} bits need {rem_len} bytes, "
            f"only {reader.end - reader.pos} left"
        )
    return m, k, reader.take(unary_len, "unary stream"), reader.take(rem_len, "remainder stream")


def _check_span(unary_view: bitarray, unary_len: int, m: int, k: int, total: int) -> None:
    """The unary stream ends in its last byte, and the positions it codes cannot run past the
    mask nor wrap int64 (checked before any array is allocated from it)."""
    last_bit = unary_view.find(1, right=True)
    if last_bit // 8 != unary_len - 1:
        raise MaskPayloadError(
            f"trailing garbage: unary stream ends at bit {last_bit} but spans {unary_len} bytes"
        )
    sum_q = last_bit + 1 - m
    # Every running sum below is sum(q << k) + sum(r) + count <= (sum_q + m) << k, and the last
    # one is >= (sum_q << k) + m: reject what must overrun the mask or could wrap int64.
    if (sum_q << k) + m > total or (sum_q + m) << k >= INT64_SAFE:
        raise MaskPayloadError(f"decoded flip positions run past the {total}-bit mask")


def _positions(unary: memoryview, rem: memoryview, m: int, k: int) -> np.ndarray:
    """The flip positions the two streams code: ``cumsum((q << k | r) + 1) - 1``."""
    # .view(bool): numpy's fast nonzero path exists for bool only (uint8 is ~10x slower).
    unary_bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8), bitorder="little")
    term = np.flatnonzero(unary_bits.view(np.bool_))
    gaps = gaps_of(term)  # quotients q_i
    del term
    if k:
        gaps <<= k
        # Remainders back from bit planes, accumulated in the narrowest dtype, then merged.
        bits = np.unpackbits(
            np.frombuffer(rem, dtype=np.uint8), count=m * k, bitorder="little"
        ).reshape(m, k)
        acc = uint_for(k)
        rem_vals = bits[:, 0].astype(acc)
        for j in range(1, k):
            rem_vals |= bits[:, j].astype(acc) << acc(j)
        gaps |= rem_vals
    # positions = cumsum(g + 1) - 1, in place.
    gaps += 1
    positions = np.cumsum(gaps, out=gaps)
    positions -= 1
    return positions
