"""Memory at scale: ``python -m bench.scale`` (1,000 clients, 20 per round, peak memory).

Runs ``python -m simulations.run`` with many clients and a small fraction per round through
the real Simulation Engine, and samples, every 0.2 s, the memory of the whole process tree it
starts (the driver, Ray's GCS, raylet and dashboard processes, and the client actors), read
from ``/proc``: the sum of RSS (counts pages shared between processes once per process, so
it over-states) and the sum of PSS (shared pages split between their users: the tree's real
footprint). Reports the peaks. Target (method-zoo issue): 1,000 clients with 20 per round
in at most 4 GB.

Linux only (``/proc``). Writes ``results/bench/scale.csv``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import add_csv_out, add_methods, add_rounds, bench_parser, write_table


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(root: int) -> list[int]:
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def _kib(pid: int, path: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(sum RSS bytes, sum PSS bytes, processes) of ``root`` and its descendants."""
    pids = _descendants(root)
    rss = sum(_kib(p, "status", "VmRSS:") for p in pids) * 1024
    pss = sum(_kib(p, "smaps_rollup", "Pss:") for p in pids) * 1024
    return rss, pss, len(pids)


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.scale", __doc__)
    p.add_argument("--clients", type=int, default=1000, help="simulated clients")
    p.add_argument("--per-round", type=int, default=20, help="clients sampled per round")
    add_rounds(p, 3)
    add_methods(p, "evolve_dither,fedavg")
    p.add_argument("--dataset", default="fashion-mnist", help="the data set")
    p.add_argument("--model", default="mlp", help="the architecture")
    add_csv_out(p, Path("results/bench/scale.csv"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "simulations.run", "--clients", str(args.clients),
               "--fraction", f"{args.per_round / args.clients:g}", "--rounds", str(args.rounds),
               "--dataset", args.dataset, "--model", args.model, "--partition", "iid",
               "--methods", args.methods, "--quiet", "--out", str(Path(tmp) / "run")]  # fmt: skip
        started = time.monotonic()
        log = Path(tmp) / "run.log"  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
        peak_rss = peak_pss = peak_procs = 0
        while proc.poll() is None:
            rss, pss, n = tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            peak_procs = max(peak_procs, n)
            time.sleep(0.2)
        if proc.returncode:
            print(log.read_text()[-3000:], file=sys.stderr)
            return 1
        rounds = pd.read_csv(Path(tmp) / "run" / "rounds.csv")
    row = {
        "clients": args.clients, "per_round": args.per_round, "rounds": args.rounds,
        "methods": args.methods, "dataset": args.dataset, "model": args.model,
        "peak_rss_sum_gb": peak_rss / 1e9, "peak_pss_sum_gb": peak_pss / 1e9,
        "peak_processes": peak_procs, "wall_s": round(time.monotonic() - started, 1),
        "rounds_logged": int((rounds["round"] > 0).sum()),
    }  # fmt: skip
    write_table(pd.DataFrame([row]), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
