"""Is the configuration kept at a short horizon still the one to keep at a longer one?

``python -m bench.neighbours --preset fashion-mnist --rounds 100 --picked-from DIR
--methods fedavg [--out DIR2]``

A seeds frontier on a longer horizon (the converged reference: 100 rounds) keeps each
method's configuration from the short tuning (``DIR``: 30-round runs on the tuning seed) instead
of tuning again at three times the cost. Issue 24 asks for that choice to be checked: rerun the
kept configuration and its *neighbours* at the new horizon on the tuning seed (never a fresh
seed: those only report), and say whether it is still ahead.

Neighbours, per option the grid varies (``Method.grid``): the grid's next value below and
above the kept one; where the kept value sits at an end of the grid, one step beyond it at the
grid's own ratio (FedAvg's ``dense-lr`` 0.02, 0.05, **0.1** gives 0.05 and 0.2): a kept value at
an edge is where a longer horizon is most likely to want another one. Options the grid does
not vary stay as they are.

Runs, in this order so a sweep cut short has the ones that matter most: the kept
configuration, then the neighbours beyond the grid, then those inside it. Each is a real
``simulations.run`` on the preset's tuning seed, resumable as in ``bench.accuracy_frontier``
(``<out>/runs/<method>__<config>/``). ``--report-only`` writes the table from what has run;
a configuration that has not run is listed as such.

Writes ``neighbours.md`` to ``--out``: per configuration the best round's accuracy and the best
5-round mean (``pemn_fl.window``, the rule no single round decides), and whether the kept one is
still ahead under each rule. For FedAvg the windowed best - 1 pt is also the target it would
set on this seed: how far a better-tuned FedAvg would move the reference.

And ``picks.json``: per method the configuration to use at this horizon, by the short tuning's
own rule (the best round) once the kept one and all its neighbours have run; until then the
kept one, marked undecided. ``bench.accuracy_frontier --repick-from <out>`` runs and reports
the re-picked configurations on the fresh seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from bench import accuracy_frontier as F
from pemn_fl import window as W
from pemn_fl.report import BASELINE
from pemn_fl.seeds import read_rounds

Config = F.Config
PICKS = "picks.json"
RULE = ("the short tuning's own rule, the best round's accuracy, then fewer bytes to reach it "
        "(the kept configuration stays unless another is strictly ahead), once the kept "
        "configuration and every neighbour have run at this horizon")


def _round_value(value: float) -> float:
    """A step beyond the grid, on two significant digits (0.1 * 2 is 0.2, not 0.2000000001)."""
    return float(f"{value:.2g}")


def neighbours(kept: Config, grid: tuple[Config, ...]) -> list[tuple[Config, str]]:
    """Each neighbour of ``kept`` in ``grid`` with how it was found: ``"beyond"`` (one step
    past the grid's end at its own ratio) or ``"inside"`` (a grid value); one option changed at
    a time, beyond-the-grid ones first."""
    found: list[tuple[Config, str]] = []
    for key, value in kept.items():
        values = sorted({float(c[key]) for c in grid if key in c})
        if len(values) < 2 or value not in values:
            continue  # the grid does not vary it (or the kept value is not one of its own)
        i = values.index(value)
        below = (values[i - 1], "inside") if i > 0 else (values[0] ** 2 / values[1], "beyond")
        above = ((values[i + 1], "inside") if i < len(values) - 1
                 else (values[-1] ** 2 / values[-2], "beyond"))  # fmt: skip
        for new, how in (below, above):
            if new <= 0 or not math.isfinite(new):
                continue
            found.append(({**kept, key: _round_value(new) if how == "beyond" else new}, how))
    return sorted(found, key=lambda item: item[1] != "beyond")


def _scores(run: Path, method: str, rounds: int) -> dict | None:
    """Best round and best windowed mean of a finished run over its first ``rounds`` rounds
    (a longer run read at a shorter horizon, as ``pemn_fl.window.truncated``), or None if it
    has not finished."""
    if not (run / "summary.json").is_file() or not (run / "rounds.csv").is_file():
        return None
    frame = read_rounds(run / "rounds.csv")
    frame = frame[(frame["method"] == method) & (frame["round"] > 0) & (frame["round"] <= rounds)]
    if frame.empty:
        return None
    smooth = W.smoothed(frame)
    best, window = frame.loc[frame["accuracy"].idxmax()], smooth.loc[smooth["accuracy"].idxmax()]
    return {"rounds": int(frame["round"].max()),
            "best": float(best["accuracy"]), "best_round": int(best["round"]),
            "bytes_at_best": int(best["cumulative_bytes"]),
            "window": float(window["accuracy"]), "window_round": int(window["round"])}  # fmt: skip


def repick(scored: dict[str, dict], kept_name: str, configurations: int) -> str | None:
    """The configuration to keep at this horizon, by the short tuning's own rule
    (``accuracy_frontier.tuned``: the best round's accuracy, then fewer bytes to reach it; the
    kept one stays unless another is strictly ahead), or None until the kept configuration and
    every neighbour have run (a pick from part of the neighbourhood could be undone by the
    rest)."""
    if kept_name not in scored or len(scored) < configurations:
        return None

    def rank(name: str) -> tuple[float, int]:
        return scored[name]["best"], -scored[name]["bytes_at_best"]

    leader = max(scored, key=rank)
    return kept_name if rank(kept_name) >= rank(leader) else leader


def table(out: Path, method: str, kept: Config, grid: tuple[Config, ...],
          rounds: int) -> tuple[str, str, str | None]:  # fmt: skip
    """The Markdown rows for one method, its one-line verdict, and the configuration to keep
    at this horizon (``repick``; None while undecided)."""
    configs = [(kept, "kept"), *neighbours(kept, grid)]
    rows, scored = [], {}
    for config, role in configs:
        name = F.config_name(config)
        s = _scores(F.run_dir(out, method, config), method, rounds)
        if s is None:
            rows.append(f"| {method} | {name} | {role} | not run | | |")
            continue
        scored[name] = s
        target = f" (target {100 * (s['window'] - 0.01):.2f})" if method == BASELINE else ""
        rows.append(f"| {method} | {name} | {role} | {s['rounds']} | "
                    f"{100 * s['best']:.2f} (r{s['best_round']}) | "
                    f"{100 * s['window']:.2f} (r{s['window_round']}){target} |")  # fmt: skip
    kept_name = F.config_name(kept)
    others = {n: s for n, s in scored.items() if n != kept_name}
    if kept_name not in scored or not others:
        verdict = f"- {method}: not decided yet (the kept configuration and a neighbour must run)"
    else:
        k = scored[kept_name]
        # The margin to the closest neighbour, in points: negative when one is ahead.
        margin = {rule: 100 * (k[rule] - max(s[rule] for s in others.values()))
                  for rule in ("best", "window")}  # fmt: skip

        def word(rule: str) -> str:
            return (f"still ahead (by {margin[rule]:.3f} pt)" if margin[rule] >= 0
                    else f"**not** ahead ({margin[rule]:.3f} pt)")  # fmt: skip

        missing = len(configs) - len(scored)
        verdict = (f"- {method}: the kept `{kept_name}` is {word('best')} by the best round, "
                   f"{word('window')} by the {W.WINDOW}-round mean, of the {len(others)} "
                   "neighbour(s) run"
                   + (f" ({missing} not run yet)" if missing else ""))  # fmt: skip
    pick = repick(scored, kept_name, len(configs))
    if pick is not None:
        verdict += (f"; keep `{pick}` at {rounds} rounds" if pick == kept_name
                    else f"; **re-picked** at {rounds} rounds: `{pick}`")  # fmt: skip
    return "\n".join(rows), verdict, pick


def report(out: Path, methods: list[str], picked: pd.DataFrame, rounds: int,
           command: str) -> tuple[str, dict]:  # fmt: skip
    """``neighbours.md``'s text, and the picks (``picks.json``: per method the kept
    configuration, the one to use at ``rounds``, and whether the check has decided it)."""
    grid = F.grids()
    parts, verdicts = [], []
    picks: dict = {"rounds": rounds, "rule": RULE, "command": command, "methods": {}}
    for method in methods:
        kept = F._config_of(method, str(picked.loc[method, "config"]))
        rows, verdict, pick = table(out, method, kept, grid[method], rounds)
        parts.append(rows)
        verdicts.append(verdict)
        picks["methods"][method] = {"kept": F.config_name(kept),
                                    "pick": pick or F.config_name(kept),
                                    "decided": pick is not None}  # fmt: skip
    return "\n".join([
        f"# The kept configurations' neighbours at {rounds} rounds (tuning seed)", "",
        f"Command: `{command}`", "",
        "Kept: the configuration picked on the tuning seed's short runs (`--picked-from`). "
        "Neighbours: the grid's next value of each option it varies, or one step beyond its "
        f"end at the grid's ratio (*beyond*). Accuracy %; *{W.WINDOW}-round mean*: the best "
        f"mean of {W.WINDOW} consecutive rounds; for FedAvg, that mean - 1 pt is the target "
        "the configuration would set on this seed.", "",
        f"| method | configuration | role | rounds | best round | best {W.WINDOW}-round mean |",
        "|---|---|---|---|---|---|",
        *parts, "", *verdicts, "",
        f"Re-pick rule ({PICKS}, read by `bench.accuracy_frontier --repick-from`): {RULE}.",
        ""]), picks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.neighbours", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(F.PRESETS), default="fashion-mnist",
                   help="the shared settings of every run, as in bench.accuracy_frontier")
    p.add_argument("--rounds", type=int, required=True, help="the longer horizon, e.g. 100")
    p.add_argument("--picked-from", type=Path, required=True, metavar="DIR",
                   help="the short tuning sweep whose picks are checked (its runs/)")
    p.add_argument("--methods", default=BASELINE, help="comma list (default: fedavg)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: <picked-from>-neighbours-<rounds>")
    p.add_argument("--extra", default="", help="extra simulations.run options for every run")
    p.add_argument("--report-only", action="store_true", help="no new runs; rebuild the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    grid = F.grids()
    unknown = [m for m in methods if m not in grid]
    if unknown:
        print(f"error: no tuning grid for {unknown}; choose from {', '.join(grid)}",
              file=sys.stderr)  # fmt: skip
        return 2
    runs, _ = F.collect(args.picked_from, methods)
    missing = [m for m in methods if runs.empty or m not in set(runs["method"])]
    if missing:
        print(f"error: {args.picked_from} has no finished tuning run of {', '.join(missing)}; "
              "point --picked-from at a bench.accuracy_frontier sweep that tuned them",
              file=sys.stderr)  # fmt: skip
        return 2
    picked = F.tuned(runs)
    out = args.out or args.picked_from.with_name(
        f"{args.picked_from.name}-neighbours-{args.rounds}")
    base = F.PRESETS[args.preset] + args.extra.split()
    if not args.report_only:
        for method in methods:
            kept = F._config_of(method, str(picked.loc[method, "config"]))
            for config in [kept, *(c for c, _ in neighbours(kept, grid[method]))]:
                F.run_one(base, method, config, args.rounds, out)
    command = (f"python -m bench.neighbours --preset {args.preset} --rounds {args.rounds} "
               f"--picked-from {args.picked_from} --methods {','.join(methods)} --out {out}"
               + (f' --extra="{args.extra}"' if args.extra else ""))  # fmt: skip
    md, picks = report(out, methods, picked, args.rounds, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "neighbours.md").write_text(md)
    (out / PICKS).write_text(json.dumps(picks, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
