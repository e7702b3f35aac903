"""Robustness to Byzantine clients: ``python -m bench.byzantine``.

A fixed, seeded share F of the clients attacks every round it is sampled (``--byzantine F``):
PEMN-FL clients send the complement of their trained mask, evolve_dither clients the
complement of their noise mask, FedAvg clients their update negated and scaled by 5. All
payloads are well formed, so no check rejects them. For
F = 0, 0.1, 0.2, 0.3 on the classroom setting (digits, 20 clients), each defence runs through
``python -m simulations.run`` (Flower's Simulation Engine, same clients, rounds and data):

* PEMN-FL and evolve_dither, votes weighted by example count (the default), PEMN-FL with one
  vote per client (``--vote-weighting uniform``, FRL's rule), and both with 30% of each
  round's votes trimmed (``--trim-votes 0.3``: the votes farthest from the coordinate-wise
  median are left out);
* FedAvg with the mean (``--robust none``), the coordinate-wise median (``--robust median``)
  and the 20%-trimmed mean (``--robust trimmed-mean``), Flower's own strategies.

The table gives each defence's best test accuracy and the points it loses against the same
method with no attackers and its default aggregation (so a defence's cost in peace time
shows too). Resumable: a run whose ``summary.json`` exists is not rerun.
Writes ``<out>/byzantine.csv`` and ``byzantine.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.common import add_rounds, bench_parser

BASE = ["--clients", "20", "--dataset", "digits", "--model", "mlp"]
# (run name, options): each run may carry two methods, on the same clients and rounds.
RUNS: dict[str, list[str]] = {
    "examples+mean": ["--methods", "pemn,fedavg", "--robust", "none"],
    "uniform+median": ["--methods", "pemn,fedavg", "--vote-weighting", "uniform",
                       "--robust", "median"],
    "trimmed-mean": ["--methods", "fedavg", "--robust", "trimmed-mean"],
    "pemn+trim": ["--methods", "pemn", "--trim-votes", "0.3"],
    "dither": ["--methods", "evolve_dither"],
    "dither+trim": ["--methods", "evolve_dither", "--trim-votes", "0.3"],
}  # fmt: skip
DEFENCES = {  # (run, method) -> label
    ("examples+mean", "pemn"): "PEMN-FL, votes weighted by examples",
    ("uniform+median", "pemn"): "PEMN-FL, one vote per client",
    ("examples+mean", "fedavg"): "FedAvg, mean",
    ("uniform+median", "fedavg"): "FedAvg, coordinate-wise median",
    ("pemn+trim", "pemn"): "PEMN-FL, 30% trimmed votes",
    ("trimmed-mean", "fedavg"): "FedAvg, 20% trimmed mean",
    ("dither", "evolve_dither"): "evolve_dither, votes weighted by examples",
    ("dither+trim", "evolve_dither"): "evolve_dither, 30% trimmed votes",
}


METHOD_OF = {label: method for (_, method), label in DEFENCES.items()}


def run(out: Path, name: str, share: float, rounds: int) -> Path:
    target = out / "runs" / f"{name}__byzantine={share:g}"
    if (target / "summary.json").exists():
        return target
    cmd = [sys.executable, "-m", "simulations.run", *BASE, *RUNS[name], "--byzantine",
           f"{share:g}", "--rounds", str(rounds), "--quiet", "--overwrite",
           "--out", str(target)]  # fmt: skip
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return target


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.byzantine", __doc__)
    p.add_argument("--shares", default="0,0.1,0.2,0.3",
                   help="comma list of attacking shares of the clients (--byzantine) to run")
    add_rounds(p, 12)
    p.add_argument("--out", type=Path, default=Path("results/byzantine"),
                   help="output directory (runs, byzantine.csv and byzantine.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shares = [float(s) for s in args.shares.split(",")]
    rows = []
    for name in RUNS:
        for share in shares:
            rounds = pd.read_csv(run(args.out, name, share, args.rounds) / "rounds.csv")
            for method, part in rounds.groupby("method"):
                rows.append({"defence": DEFENCES[(name, str(method))], "byzantine": share,
                             "best_accuracy": part["accuracy"].max(),
                             "final_accuracy": part["accuracy"].iloc[-1]})  # fmt: skip
    table = pd.DataFrame(rows)
    # The loss is against the method without attackers and without a defence (its default
    # aggregation): a defence that costs accuracy in peace time shows that cost too.
    default = {"pemn": "PEMN-FL, votes weighted by examples", "fedavg": "FedAvg, mean",
               "evolve_dither": "evolve_dither, votes weighted by examples"}  # fmt: skip
    clean = table[table["byzantine"] == 0].set_index("defence")["best_accuracy"]
    pairs = zip(table["defence"], table["best_accuracy"], strict=True)
    table["loss_pt"] = [100 * (clean[default[METHOD_OF[d]]] - acc) for d, acc in pairs]
    table.to_csv(args.out / "byzantine.csv", index=False)
    wide = table.pivot(index="defence", columns="byzantine", values="best_accuracy")
    loss = table.pivot(index="defence", columns="byzantine", values="loss_pt")
    order = [d for d in DEFENCES.values() if d in wide.index]
    lines = [
        "# Byzantine clients: best test accuracy (points lost against the same method with "
        "no attackers and no defence)", "",
        f"Command: `python -m bench.byzantine --rounds {args.rounds}`  ",
        f"Base: `{' '.join(BASE)}` (defaults otherwise), {args.rounds} rounds.", "",
        "| defence | " + " | ".join(f"F = {s:g}" for s in shares) + " |",
        "|---|" + "---|" * len(shares),
    ]  # fmt: skip
    for d in order:
        cells = [f"{wide.loc[d, s]:.4f} ({loss.loc[d, s]:+.1f})" for s in shares]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    (args.out / "byzantine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
