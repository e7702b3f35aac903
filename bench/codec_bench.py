"""Speed and size of the mask codec on realistic update sizes: ``python -m bench.codec_bench``.

Question answered: can a client encode and the server decode a 10M-parameter mask update fast
enough (target: encode + decode <= 50 ms) that the codec never matters next to local training,
and how close do the bytes get to the information-theoretic floor?

Each row is one (mask size, flip rate) pair: a uniformly random reference mask and a mask that
differs from it at a random ``flip_rate`` fraction of positions (independent flips), split into 8
layers like a small network, encoded with ``encoding="auto"``.  Timings are medians over
``--repeats`` runs of ``time.perf_counter``.  ``ideal_Hp_bits_per_param`` is the binary entropy
H(p) of the flip rate: a lower bound for coding i.i.d. flips, *not* bytes sent; the bytes sent
are ``payload_bytes`` (header and CRC included).

Writes ``results/bench/codec.csv`` (relative to the repository root).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pemn_fl.codec import decode_mask, encode_mask, inspect_payload

TARGET_MS = 50.0
SIZES = (1_000_000, 10_000_000)
FLIP_RATES = (0.0, 0.001, 0.01, 0.1, 0.5)
FINGERPRINT = "0123456789abcdef"
REFERENCE_ID = 7
# Relative layer sizes of an 8-layer network (largest layers in the middle, small head).
LAYER_WEIGHTS = (0.02, 0.08, 0.15, 0.25, 0.25, 0.15, 0.08, 0.02)
OUT_CSV = Path(__file__).resolve().parent.parent / "results" / "bench" / "codec.csv"


def binary_entropy(p: float) -> float:
    """H(p) in bits: the per-parameter floor for sending i.i.d. flips at rate p."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def layer_sizes(total: int) -> list[int]:
    sizes = [int(total * w) for w in LAYER_WEIGHTS]
    sizes[-1] += total - sum(sizes)
    return sizes


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first call pays page faults for freshly allocated buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_row(total: int, flip_rate: float, repeats: int, rng: np.random.Generator) -> dict:
    sizes = layer_sizes(total)
    bounds = np.cumsum(sizes)[:-1]
    ref_flat = rng.random(total) < 0.5
    flips = rng.random(total) < flip_rate
    reference = np.split(ref_flat, bounds)
    mask = np.split(ref_flat ^ flips, bounds)
    references = {REFERENCE_ID: reference}

    def encode() -> bytes:
        return encode_mask(
            mask, fingerprint=FINGERPRINT, reference=reference, reference_id=REFERENCE_ID
        )

    payload = encode()

    def decode() -> list[np.ndarray]:
        return decode_mask(
            payload, fingerprint=FINGERPRINT, layer_sizes=sizes, references=references
        )

    def round_trip() -> list[np.ndarray]:
        return decode_mask(
            encode(), fingerprint=FINGERPRINT, layer_sizes=sizes, references=references
        )

    decoded = decode()
    if not all(np.array_equal(a, b) for a, b in zip(decoded, mask, strict=True)):
        raise AssertionError(f"round trip failed for total={total}, flip_rate={flip_rate}")

    header = inspect_payload(payload)
    packed_bytes = len(encode_mask(mask, fingerprint=FINGERPRINT))
    enc_ms = median_ms(encode, repeats)
    dec_ms = median_ms(decode, repeats)
    both_ms = median_ms(round_trip, repeats)
    return {
        "params": total,
        "flip_rate": flip_rate,
        "actual_flips": int(np.count_nonzero(flips)),
        "encoding": header.encoding,
        "payload_bytes": header.payload_bytes,
        "overhead_bytes": header.payload_bytes - header.body_bytes,
        "packed_bytes": packed_bytes,
        "bits_per_param": header.payload_bytes * 8 / total,
        "ideal_Hp_bits_per_param": binary_entropy(flip_rate),
        "encode_ms": enc_ms,
        "decode_ms": dec_ms,
        "encode_plus_decode_ms": both_ms,
        "meets_50ms_target": both_ms <= TARGET_MS,
    }


def run(sizes: Sequence[int], flip_rates: Sequence[float], repeats: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [bench_row(n, p, repeats, rng) for n in sizes for p in flip_rates]
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per row (median)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random masks")
    parser.add_argument("--out", type=Path, default=OUT_CSV,
                        help="the CSV to write")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 for a meaningful median")

    load_before = os.getloadavg()[0]
    df = run(SIZES, FLIP_RATES, args.repeats, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False, float_format="%.6g")

    print(
        f"mask codec, encoding=auto, median of {args.repeats} runs, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, load average before/after "
        f"{load_before:.2f}/{os.getloadavg()[0]:.2f} (timings are noisy on a busy machine)"
    )
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    big = df[df["params"] == max(SIZES)]
    verdict = "met" if bool(big["meets_50ms_target"].all()) else "NOT met"
    print(f"target encode+decode <= {TARGET_MS:.0f} ms at {max(SIZES):,} params: {verdict}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
