"""Where a reference round's time goes, by phase: ``python -m bench.round_profile``.

One method's rounds run as plain function calls in this process (``bench.sim_overhead``'s
plain loop: the strategy's ``configure_train``, each sampled client's step, then
``aggregate_train`` and the server's evaluation), under ``cProfile``. Each phase is the
cumulative time of the functions that are it, which never call one another:

* **local training**: ``pemn_fl.task.train_loop`` (forward, backward, optimiser steps);
* **evaluation**: ``pemn_fl.task.evaluate`` (the server's test-set pass);
* **catch-up**: ``frames.replica.catch_up`` (a node replaying the rounds it missed);
* **client, the rest**: the client step less the two above (decoding the instruction,
  building the network, encoding the reply, the node's state);
* **server coding and aggregation**: ``configure_train`` + ``aggregate_train`` (building
  the downlinks, decoding the replies, voting or averaging).

One untimed round first pays the one-time costs (imports, the dataset and partition caches)
that a 100-round run pays once.

The Simulation Engine's own cost on top is ``bench.sim_overhead``'s engine / parallel loop
(``results/bench/sim_overhead.csv``), quoted beside. Percentages are of the profiled loop's
total (profiling slows every call alike, so shares, not seconds, are the result). Target
(issue 24): anything that is neither training nor evaluation above 10 % is worth cutting.
Writes ``results/bench/round_profile.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import pandas as pd

from bench.accuracy_frontier import PRESETS
from bench.common import add_csv_out, add_rounds, bench_parser, save_csv
from bench.sim_overhead import _settings, plain_loop

ROOT = Path(__file__).resolve().parents[1]
PHASES = {  # phase -> (file suffix, function name) whose cumulative time it is
    "local training": ("pemn_fl/task.py", "train_loop"),
    "evaluation": ("pemn_fl/task.py", "evaluate"),
    "catch-up": ("pemn_fl/methods/frames/replica.py", "catch_up"),
    "configure_train": ("", "configure_train"),
    "aggregate_train": ("", "aggregate_train"),
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Summed cumulative seconds of every function ``name`` in a file ending ``suffix``
    (the outermost call only: a recursive call is not counted twice by cProfile)."""
    total = 0.0
    for (path, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and path.endswith(suffix):
            total += row[3]
    return total


def profile(preset: str, method: str, rounds: int, config: list[str]) -> dict[str, object]:
    """One method's rounds under cProfile; seconds per phase."""
    settings, clients = _settings([*PRESETS[preset], *config], method, rounds)
    warm, _ = _settings([*PRESETS[preset], *config], method, 1)
    plain_loop(warm, clients, method)  # imports and caches: a long run pays them once
    profiler = cProfile.Profile()
    profiler.enable()
    frame = plain_loop(settings, clients, method)
    profiler.disable()
    stats = pstats.Stats(profiler)
    seconds = {phase: cumulative(stats, *where) for phase, where in PHASES.items()}
    client = float(frame["client_compute_s"].sum())
    total = client + float(frame["server_s"].sum())
    return {
        "preset": preset, "method": method, "rounds": rounds, "total_s": total,
        "local training": seconds["local training"], "evaluation": seconds["evaluation"],
        "catch-up": seconds["catch-up"],
        "client, the rest": client - seconds["local training"] - seconds["catch-up"],
        "server coding and aggregation": seconds["configure_train"]
        + seconds["aggregate_train"],
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.round_profile", __doc__)
    p.add_argument("--preset", default="fashion-mnist", choices=sorted(PRESETS),
                   help="the shared settings of every run")
    p.add_argument("--methods", default="fedavg,qsgd,evolve_lattice",
                   help="comma list of methods to profile")
    add_rounds(p, 3)
    add_csv_out(p, ROOT / "results" / "bench" / "round_profile.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configs = {"fedavg": ["--dense-lr", "0.1"], "qsgd": ["--bits", "4", "--dense-lr", "0.02"],
               "evolve_lattice": ["--noise-scale", "1"],
               "evolve_dither": ["--noise-scale", "1", "--dither-levels", "2"],
               "evolve": ["--noise-scale", "2"]}  # the picked configurations (frontier.md)
    rows = [profile(args.preset, m, args.rounds, configs.get(m, []))
            for m in args.methods.split(",")]  # fmt: skip
    save_csv(pd.DataFrame(rows), args.out)
    phases = ["local training", "evaluation", "catch-up", "client, the rest",
              "server coding and aggregation"]  # fmt: skip
    print(f"| method | round s (profiled) | {' | '.join(phases)} |")
    print("|---|---|" + "---|" * len(phases))
    for row in rows:
        shares = " | ".join(f"{100 * float(row[p]) / float(row['total_s']):.1f} %"  # type: ignore[arg-type]
                            for p in phases)  # fmt: skip
        print(f"| {row['method']} | {float(row['total_s']) / args.rounds:.2f} | {shares} |")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
