"""``python -m simulations.plot DIR [DIR ...]``: redraw bandwidth-accuracy curves from runs.

Reads each run's ``rounds.csv`` (and ``summary.json`` for the target line when one run is
given) and draws all curves on one figure, so settings can be compared side by side. A
directory written by ``simulations.run --seeds`` (``seed-<s>/`` runs inside) is a seed
group: each method is drawn as its mean over the seeds with a band (``pemn_fl.seeds``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pemn_fl.report import RoundsFileError, plot_runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.plot", description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with rounds.csv)")
    p.add_argument("--out", type=Path, default=None,
                   help="output PNG (default: bandwidth_accuracy.png in the first run, or "
                        "comparison.png in the current directory for several runs)")  # fmt: skip
    p.add_argument("--title", default=None)
    p.add_argument("--bytes", dest="bytes_level", choices=["payload", "message", "wire"],
                   default="wire", help="byte level on the x axis (runs made before the wire "
                   "level existed draw message bytes, and the axis says so)")  # fmt: skip
    p.add_argument("--x", choices=["bytes", "time", "energy"], default="bytes",
                   help="the x axis: cumulative bytes, or the time model's simulated time or "
                   "the clients' energy (runs made with --link, or the output directory of "
                   "python -m simulations.timeline)")
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
