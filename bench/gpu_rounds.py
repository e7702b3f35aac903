"""Fashion-MNIST reference rounds on the GPU against the CPU, side by side in one run.

``python -m bench.gpu_rounds [--rounds 5] [--methods evolve_dither,fedavg]``

Runs the README's Fashion-MNIST reference setting (``bench.accuracy_frontier``'s preset)
twice through ``python -m simulations.run``, ``--device cpu`` then ``--device cuda`` (one
client per GPU share, ``--gpus-per-client``), and prints the median seconds per round of each
method over rounds 2.. (round 1 pays for start-up) and their ratio. Writes
``results/bench/gpu_rounds.csv``. Without a CUDA device it says so and writes nothing: the
table exists only where a GPU was measured (a CPU-only torch has no CUDA; install a CUDA build
of the pinned torch version on a GPU machine).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench.accuracy_frontier import PRESETS
from bench.common import add_csv_out, add_methods, add_rounds, bench_parser, save_csv


def rounds_of(device: str, rounds: int, methods: str, gpus: float, out: Path) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "simulations.run", *PRESETS["fashion-mnist"], "--rounds",
           str(rounds), "--methods", methods, "--device", device, "--quiet", "--out", str(out),
           *(["--gpus-per-client", str(gpus)] if device == "cuda" else [])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return pd.read_csv(out / "rounds.csv")


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.gpu_rounds", __doc__)
    add_rounds(p, 5)
    add_methods(p, "evolve_dither,fedavg")
    p.add_argument("--gpus-per-client", type=float, default=0.5,
                   help="Ray GPUs per client actor on the GPU runs")
    add_csv_out(p, Path("results/bench/gpu_rounds.csv"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to compare; "
              "run this on a GPU machine with a CUDA build of torch")  # fmt: skip
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames = {d: rounds_of(d, args.rounds, args.methods, args.gpus_per_client,
                               Path(tmp) / d) for d in ("cpu", "cuda")}  # fmt: skip
    for method in args.methods.split(","):
        medians = {d: float(f[(f["method"] == method) & (f["round"] >= 2)]["wall_s"].median())
                   for d, f in frames.items()}  # fmt: skip
        rows.append({"method": method, "cpu_s_per_round": medians["cpu"],
                     "cuda_s_per_round": medians["cuda"],
                     "cpu_over_cuda": medians["cpu"] / medians["cuda"],
                     "device": torch.cuda.get_device_name(0)})  # fmt: skip
    table = pd.DataFrame(rows)
    save_csv(table, args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
