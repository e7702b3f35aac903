"""``python -m simulations.plot DIR [DIR ...]``: redraw bandwidth-accuracy curves from runs.

Reads each run's ``rounds.csv`` (and ``summary.json`` for the target line when one run is
given) and draws all curves on one figure, so settings can be compared side by side. A
directory written by ``simulations.run --seeds`` (``seed-<s>/`` runs inside) is a seed
group: each method is drawn as its mean over the seeds with a band (``pemn_fl.seeds``), and
only when its members are alike: every seed its config.json lists is there, each ran with its
own seed and otherwise the same settings, and all hold the same rounds of the same methods. A
mean over a missing seed or a seed cut short would be a mean of unequal runs, so such a
group is refused in one ``error:`` line that says which seed differs and what to do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pemn_fl.figure import plot_runs
from pemn_fl.report import RoundsFileError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulations.plot", description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with rounds.csv)")
    p.add_argument("--out", type=Path, default=None,
                   help="output PNG (default: bandwidth_accuracy.png in the first run, or "
                        "comparison.png in the current directory for several runs)")  # fmt: skip
    p.add_argument("--title", default=None,
                   help="the figure's title")
    p.add_argument("--bytes", dest="bytes_level", choices=["payload", "message", "wire"],
                   default="wire", help="byte level on the x axis (runs made before the wire "
                   "level existed draw message bytes, and the axis says so)")  # fmt: skip
    p.add_argument("--x", choices=["bytes", "time", "energy"], default="bytes",
                   help="the x axis: cumulative bytes, or the time model's simulated time or "
                   "the clients' energy (runs made with --link, or the output directory of "
                   "python -m simulations.timeline)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pemn_fl import seeds as S

    def has_rounds(r: Path) -> bool:
        return (r / "rounds.csv").is_file() or (r / "timeline.csv").is_file()

    groups = {r: S.seed_dirs(r) for r in args.runs if not has_rounds(r)}
    if groups and all(groups.values()):
        if len(groups) != len(args.runs):
            print("error: give either run directories or seed groups (simulations.run "
                  "--seeds), not both", file=sys.stderr)  # fmt: skip
            return 2
        return _plot_groups(args, groups)
    missing = [str(r / "rounds.csv") for r in args.runs if not has_rounds(r)]
    if missing:
        print(f"error: no rounds.csv in: {', '.join(missing)} (pass run directories written "
              "by python -m simulations.run)", file=sys.stderr)  # fmt: skip
        return 2
    default = (args.runs[0] / "bandwidth_accuracy.png" if len(args.runs) == 1
               else Path("comparison.png"))  # fmt: skip
    try:
        out = plot_runs(args.runs, args.out or default, title=args.title,
                        level=args.bytes_level, x=args.x)
    except RoundsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # matplotlib could not write the figure there
        print(f"error: --out {args.out or default}: cannot write the figure there "
              f"({exc.strerror or exc})", file=sys.stderr)  # fmt: skip
        return 2
    print(f"wrote {out}")
    return 0


def _plot_groups(args: argparse.Namespace, groups: dict[Path, dict[int, Path]]) -> int:
    """Seed groups: mean curves with bands, one set per group."""
    import json

    from pemn_fl import seeds as S

    default = (args.runs[0] / "bandwidth_accuracy.png" if len(args.runs) == 1
               else Path("comparison.png"))  # fmt: skip
    target = None
    if len(groups) == 1:
        try:
            target = json.loads((args.runs[0] / "summary.json").read_text())["target_accuracy"]
        except (OSError, ValueError, KeyError, TypeError):
            target = None
    try:
        frames = {("" if len(groups) == 1 else r.name): S.load(d) for r, d in groups.items()}
        for (group, dirs), loaded in zip(groups.items(), frames.values(), strict=True):
            problem = group_problem(group, dirs, loaded)
            if problem:
                print(f"error: {group}: {problem}; a mean over its seeds would mix unequal "
                      f"runs. Finish it (python -m simulations.run --resume {group}) or draw "
                      f"its seeds as separate runs (python -m simulations.plot "
                      f"{' '.join(str(d) for d in dirs.values())})", file=sys.stderr)  # fmt: skip
                return 2
        out = S.plot_bands(frames, args.out or default, level=args.bytes_level,
                           title=args.title, target=target)  # fmt: skip
    except RoundsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: --out {args.out or default}: cannot write the figure there "
              f"({exc.strerror or exc})", file=sys.stderr)  # fmt: skip
        return 2
    print(f"wrote {out}")
    return 0


def _settings(path: Path) -> dict[str, object] | None:
    """``settings`` of a config.json, or ``None`` where there is none readable."""
    import json

    try:
        settings = json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


# Settings that may differ between the seeds of one group: the seed itself, and local paths.
PER_SEED = ("seed", "checkpoint-dir", "data-dir")


def group_problem(group: Path, dirs: dict[int, Path],
                  frames: dict[int, pd.DataFrame]) -> str | None:  # fmt: skip
    """Why the seed runs ``dirs`` of ``group`` (read as ``frames``) cannot be averaged, or
    ``None``: a seed its config.json lists without a rounds.csv, a member whose config.json
    says another seed or other settings, or members that differ in methods or rounds."""
    import json

    try:
        listed = json.loads((group / "config.json").read_text()).get("seeds")
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list):
        missing = [s for s in listed if s not in dirs]
        if missing:
            return (f"its config.json lists seeds {', '.join(map(str, listed))} but seed "
                    f"{', '.join(map(str, missing))} has no rounds.csv")  # fmt: skip
    reference: tuple[int, dict[str, object]] | None = None
    for seed, run in dirs.items():
        settings = _settings(run / "config.json")
        if settings is None:
            continue
        if "seed" in settings and settings["seed"] != seed:
            return f"seed-{seed}/config.json says seed {settings['seed']}"
        shared = {k: v for k, v in settings.items() if k not in PER_SEED}
        if reference is None:
            reference = (seed, shared)
        else:  # a key only one side has is a setting that the other's version did not have
            differ = [k for k in sorted(set(shared) & set(reference[1]))
                      if shared[k] != reference[1][k]]  # fmt: skip
            if differ:
                key = differ[0]
                return (f"seed {seed} ran with {key}={shared[key]!r}, seed {reference[0]} "
                        f"with {reference[1][key]!r}")  # fmt: skip
    rounds = {seed: {str(m): sorted(int(r) for r in part["round"])
                     for m, part in frame.groupby("method", sort=False)}
              for seed, frame in frames.items()}  # fmt: skip
    first = next(iter(rounds), None)
    for seed, held in rounds.items():
        if first is None or held == rounds[first]:
            continue
        for method in sorted({*held, *rounds[first]}):
            mine, theirs = held.get(method, []), rounds[first].get(method, [])
            if mine != theirs:
                return (f"seed {seed} has {_span(mine)} of {method} where seed {first} has "
                        f"{_span(theirs)} (a seed cut short, still running, or another run)")
    return None


def _span(rounds: list[int]) -> str:
    """``rounds 0-12`` for a consecutive list, else the count."""
    if not rounds:
        return "no rounds"
    if rounds == list(range(rounds[0], rounds[-1] + 1)):
        return f"rounds {rounds[0]}-{rounds[-1]}"
    return f"{len(rounds)} rounds ({rounds[0]}..{rounds[-1]})"


if __name__ == "__main__":
    sys.exit(main())
