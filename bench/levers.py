"""Lever studies against their baseline: what one changed option does, seed by seed.

``python -m bench.levers --baseline results/frontier/digits --study DIR [--study DIR ...]``

A lever study (``results/levers/<preset>/<lever>/``, made by ``bench.accuracy_frontier
--seeds ... --picked-from <baseline> --extra="<option>"``) reruns the baseline seeds frontier's
picked configurations on the same fresh seeds with one option changed. Both write
``frontier-seeds.json`` (``pemn_fl.seeds``: target, bytes to target per seed) and keep every
run's ``summary.json`` under ``fresh/<method>__<config>/seed-<s>/``. This reads only those
files and prints, per study and method, baseline → lever:

* best test accuracy, mean ± std over the seeds, and the **paired** change (lever − baseline on
  the same seed, so the seed's partition, client sample and prototype cancel out), with how
  many seeds improved;
* seeds that reached the study's own target (FedAvg's seed-mean best − 1 pt: it moves when the
  lever changes FedAvg), wire MB to it (mean over the seeds that reached it) and how many times
  fewer wire bytes than FedAvg that took (range over seeds);
* total wire MB of the run, both directions;
* and, per byte budget, which method leads (highest mean best accuracy within the budget).

It adds nothing to the runs: every figure is read from the committed files, so the table is
rerun with the same command. ``--out FILE`` also writes it as markdown, headed by that command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench import fresh_runs
from pemn_fl.seeds import plus_minus, stats

LEVEL = "wire"


def _fresh_summaries(directory: Path, method: str) -> dict[int, dict]:
    """Seed -> the method's own ``summary.json`` entry, from the reported configuration's runs
    under ``directory/fresh`` (``bench.fresh_runs``)."""
    return {seed: json.loads((run / "summary.json").read_text())["methods"][method]
            for seed, run in fresh_runs.reported_runs(directory).get(method, {}).items()}


def _mean_std(values: list[float]) -> str:
    return plus_minus(stats(values), 1)


def _total_wire_mb(summary: dict) -> float:
    return (summary["uplink_wire_bytes"] + summary["downlink_wire_bytes"]) / 1e6


def _mb_to_target(entry: dict) -> str:
    reached = [b for b in entry["bytes_to_target"].values() if b is not None]
    return f"{statistics.fmean(reached) / 1e6:.2f}" if reached else "never"


def _fewer(entry: dict) -> str:
    ratios = entry.get("fewer_bytes_than_fedavg_to_target") or {}  # absent for FedAvg itself
    values = [r for r in ratios.values() if r is not None]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.1f}x" if abs(high - low) < 0.05 else f"{low:.1f}–{high:.1f}x"


def _leaders(report: dict, methods: set[str]) -> dict[float, str]:
    """Budget -> the method (among ``methods``) with the highest mean best accuracy within it;
    ``-`` where none of them finished a training round within the budget."""
    leaders: dict[float, str] = {}
    for row in report.get("budgets", []):
        trained = {m: v for m, v in row["methods"].items() if m in methods and v["trained_seeds"]}
        best = max(trained, key=lambda m: trained[m]["mean"]) if trained else "-"
        leaders[row["budget_bytes"]] = best
    return leaders


RULES = {"best": (LEVEL, "FedAvg's seed-mean best − 1 pt"),
         "window": (f"{LEVEL}_window", "FedAvg's seed-mean 5-round mean, best − 1 pt")}


def compare(baseline: Path, study: Path, rule: str = "best") -> str:
    """The markdown comparison of one lever study with its baseline (``rule``: the target
    and reach rule of the reports, ``RULES``)."""
    key, words = RULES[rule]
    base_report = json.loads((baseline / "frontier-seeds.json").read_text())[key]
    lever_report = json.loads((study / "frontier-seeds.json").read_text())[key]
    seeds = [s for s in lever_report["seeds"] if s in base_report["seeds"]]
    targets = base_report["target_accuracy"] * 100, lever_report["target_accuracy"] * 100
    lines = [
        f"### {study.name} (against `{baseline}`)",
        "",
        f"Seeds {', '.join(map(str, seeds))}; target ({words}): "
        f"{targets[0]:.2f} % → {targets[1]:.2f} %.",
        "",
        "| method | best acc % | paired Δ best acc (pt) | improved seeds | reached | wire MB to "
        "target | fewer than FedAvg | total wire MB |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for method, entry in lever_report["methods"].items():
        if method not in base_report["methods"]:
            continue
        base_entry = base_report["methods"][method]
        before, after = _fresh_summaries(baseline, method), _fresh_summaries(study, method)
        if not after:  # reused unchanged from the baseline (--reuse)
            lines.append(f"| {method} | reused from the baseline | | | | | | |")
            continue
        paired = [s for s in seeds if s in before and s in after]
        acc_b = [before[s]["best_accuracy"] * 100 for s in paired]
        acc_l = [after[s]["best_accuracy"] * 100 for s in paired]
        deltas = [a - b for a, b in zip(acc_l, acc_b, strict=True)]
        wire_b = [_total_wire_mb(before[s]) for s in paired]
        wire_l = [_total_wire_mb(after[s]) for s in paired]
        lines.append(
            f"| {method} | {_mean_std(acc_b)} → {_mean_std(acc_l)} | {_mean_std(deltas)} | "
            f"{sum(d > 0 for d in deltas)}/{len(deltas)} | "
            f"{base_entry['reached_target']}/{base_entry['seeds']} → "
            f"{entry['reached_target']}/{entry['seeds']} | "
            f"{_mb_to_target(base_entry)} → {_mb_to_target(entry)} | "
            f"{_fewer(base_entry)} → {_fewer(entry)} | "
            f"{_mean_std(wire_b)} → {_mean_std(wire_l)} |"
        )
    common = set(base_report["methods"]) & set(lever_report["methods"])
    base_leads, lever_leads = _leaders(base_report, common), _leaders(lever_report, common)
    budgets = [b for b in lever_leads
               if b in base_leads and {base_leads[b], lever_leads[b]} != {"-"}]  # fmt: skip
    if budgets:
        lines += [
            "",
            "Leader among these methods within a wire budget (both directions; `-`: none "
            "finished a round), baseline → lever: "
            + "; ".join(f"≤ {b / 1e6:g} MB: {base_leads[b]} → {lever_leads[b]}"
                        for b in budgets) + ".",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the seeds frontier directory")
    p.add_argument("--study", type=Path, action="append", required=True,
                   help="a lever study directory (repeat for several)")
    p.add_argument("--out", type=Path, default=None, help="also write the tables here")
    p.add_argument("--rule", choices=sorted(RULES), default="best",
                   help="the target and reach rule: the best round's (default) or the "
                   "windowed one (pemn_fl.window; reports made since it exists)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = []
    for directory in [args.baseline, *args.study]:
        if not (directory / "frontier-seeds.json").is_file():
            print(f"error: {directory}/frontier-seeds.json not found: run bench.accuracy_frontier "
                  f"--seeds ... --out {directory} (or --report-only) first", file=sys.stderr)
            return 2
    for study in args.study:
        try:
            parts.append(compare(args.baseline, study, args.rule))
        except KeyError:
            print(f"error: --rule {args.rule}: {study} or {args.baseline} was reported before "
                  "that rule existed; rebuild it with bench.accuracy_frontier --report-only",
                  file=sys.stderr)  # fmt: skip
            return 2
        except ValueError as err:  # fresh/ holds two configurations and no record of which
            print(f"error: {err}", file=sys.stderr)
            return 2
    text = "\n".join(parts)
    print(text, end="")
    if args.out is not None:
        # The file names the command that made it, as every report under results/ does, so
        # a reader can rebuild it (the tables only read committed files).
        command = " ".join(["python -m bench.levers", f"--baseline {args.baseline}",
                            *(f"--study {s}" for s in args.study),
                            *([f"--rule {args.rule}"] if args.rule != "best" else []),
                            f"--out {args.out}"])  # fmt: skip
        args.out.write_text(f"Command: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
