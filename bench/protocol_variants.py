"""Compare PEMN-FL protocol variants side by side: client score init, server momentum, lr.

``python -m bench.protocol_variants [--preset digits|fashion-mnist] [--rounds N]``

Each variant is one real ``simulations.run`` (Flower Simulation Engine, Ray) in a
subprocess, on the same data, partitions, clients and rounds; only the named settings
differ. Prints a table and writes ``results/bench/protocol_variants-<preset>.csv``:
accuracy reached, bytes sent (measured by ``pemn_fl.accounting``), median uplink bits per
masked parameter per client after round 1, and accuracy per MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench.common import add_rounds

PRESETS: dict[str, list[str]] = {
    "digits": ["--clients", "20", "--dataset", "digits", "--model", "mlp"],
    "fashion-mnist": [
        "--clients", "20", "--fraction", "0.5", "--dataset", "fashion-mnist", "--model", "conv2",
        "--width", "0.25", "--partition", "dirichlet", "--alpha", "0.5",
    ],
}  # fmt: skip

VARIANTS: dict[str, list[str]] = {
    "stateless margin 0": ["--client-init", "stateless", "--margin", "0"],
    "stateless margin 1": ["--client-init", "stateless", "--margin", "1"],
    "stateful": ["--client-init", "stateful"],
    "stateful margin 0.1": ["--client-init", "stateful", "--margin", "0.1"],
    "stateful margin 0.3": ["--client-init", "stateful", "--margin", "0.3"],
    "stateful + server momentum 0.5": ["--client-init", "stateful", "--server-momentum", "0.5"],
}


def run_variant(base: list[str], extra: list[str], rounds: int, out: Path) -> dict[str, object]:
    cmd = [sys.executable, "-m", "simulations.run", *base, *extra, "--rounds", str(rounds),
           "--methods", "pemn", "--quiet", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())["methods"]["pemn"]
    return {
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": summary["best_accuracy"],
        "total_MB": summary["total_bytes"] / 1e6,
        "uplink_MB": summary["uplink_bytes"] / 1e6,
        "downlink_MB": summary["downlink_bytes"] / 1e6,
        "median_uplink_bpp": summary["median_uplink_bits_per_param_after_round_1"],
        "best_acc_per_MB": summary["best_accuracy"] / (summary["total_bytes"] / 1e6),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.protocol_variants")
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits",
                   help="the shared settings of every variant's run")
    add_rounds(p, 10)
    p.add_argument("--extra", default="", help="extra simulations.run options for every variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variant names")
    p.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="output directory (protocol_variants-<preset>.csv)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    base = PRESETS[args.preset] + args.extra.split()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            result = run_variant(base, VARIANTS[name], args.rounds, Path(tmp) / str(i))
            rows.append({"variant": name, **result})
            print(f"done: {name}: {result}", flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"protocol_variants-{args.preset}.csv"
    frame.to_csv(path, index=False)
    print(f"preset {args.preset}, {args.rounds} rounds, base: {' '.join(base)}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
