"""The default method by a stated rule: ``python -m bench.default_method DIR [DIR ...]``.

Issue 24 asked for the project's default method (what ``python -m simulations.run`` runs
beside FedAvg) to be picked by a rule over the seeds frontiers, not by taste. The rule, over
the frontiers given (each a ``bench.accuracy_frontier --seeds`` output with its
``frontier-seeds.json``):

* a *cell* is one (frontier, fresh seed, target rule): the best-round target (``wire``) and
  the windowed one (``wire_window``: each curve's 5-round mean), wire bytes both;
* among the candidates (the project's own methods, ``evolve*`` by default), the one that
  reaches the target in the most cells is picked; a method missing from a frontier reaches
  none of its cells there (a report holds the methods that finished every one of its seeds);
* ties go to the larger *smallest* "x fewer wire bytes than FedAvg" over the cells it reached
  (the worst case a user may draw, not the best).

Prints one row per candidate and the pick, or writes the same Markdown to ``--out``. A
frontier reports only the seeds every listed method finished, so a method's cells there are
those seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

RULES = {"wire": "best round", "wire_window": "windowed"}


@dataclass
class Tally:
    """One candidate's cells over the frontiers."""

    method: str
    reached: int = 0
    cells: int = 0
    ratios: list[float] = field(default_factory=list)  # x fewer than FedAvg, per reached cell
    per_frontier: list[str] = field(default_factory=list)

    @property
    def smallest_ratio(self) -> float:
        return min(self.ratios) if self.ratios else 0.0


def load(directory: Path) -> dict:
    path = directory / "frontier-seeds.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no seeds frontier here (run bench.accuracy_frontier "
                                "--seeds first, or give its --out)")  # fmt: skip
    return json.loads(path.read_text())


def tally(frontiers: dict[str, dict], candidates: list[str]) -> list[Tally]:
    """Each candidate's reached cells, in the order of the rule (best first)."""
    out = []
    for method in candidates:
        one = Tally(method)
        for name, report in frontiers.items():
            parts = []
            for rule, label in RULES.items():
                view = report[rule]
                seeds = len(view["seeds"])
                one.cells += seeds
                row = view["methods"].get(method)
                if row is None:
                    parts.append(f"{label} not reported")
                    continue
                ratios = [r for r in row.get("fewer_bytes_than_fedavg_to_target", {}).values()
                          if r is not None]  # fmt: skip
                one.reached += int(row["reached_target"])
                one.ratios += ratios
                parts.append(f"{label} {row['reached_target']}/{seeds}")
            one.per_frontier.append(f"{name}: " + ", ".join(parts))
        out.append(one)
    return sorted(out, key=lambda t: (-t.reached, -t.smallest_ratio, t.method))


def markdown(tallies: list[Tally], names: list[str]) -> str:
    lines = [
        "# The default method by rule",
        "",
        f"Frontiers: {', '.join(f'`{n}`' for n in names)}. A cell is one (frontier, fresh "
        "seed, target rule); the pick reaches the target in the most cells, ties broken by "
        "the larger smallest x fewer wire bytes than FedAvg.",
        "",
        "| method | cells reached | smallest x fewer than FedAvg | per frontier |",
        "|---|---|---|---|",
    ]
    for t in tallies:
        ratio = f"{t.smallest_ratio:.1f}x" if t.ratios else "-"
        lines.append(f"| {t.method} | {t.reached}/{t.cells} | {ratio} | "
                     f"{'; '.join(t.per_frontier)} |")  # fmt: skip
    lines += ["", f"**Pick: `{tallies[0].method}`.**" if tallies else "No candidate.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.default_method",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("frontiers", nargs="+", type=Path, help="seeds frontier folders")
    parser.add_argument("--candidates", default="",
                        help="comma list (default: every evolve* method in the frontiers)")
    parser.add_argument("--out", type=Path, help="write the Markdown here too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        frontiers = {str(d): load(d) for d in args.frontiers}
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    candidates = [c for c in args.candidates.split(",") if c] or sorted(
        {m for report in frontiers.values() for m in report["wire"]["methods"]
         if m.startswith("evolve")})  # fmt: skip
    text = markdown(tally(frontiers, candidates), list(frontiers))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
