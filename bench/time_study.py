"""A seeds frontier in time and energy under several links: ``python -m bench.time_study``.

Reads a seeds frontier's runs (``DIR/fresh/<method>__<config>/seed-<s>/``, made by
``bench.accuracy_frontier --seeds``), replays every run on each link profile with the time
and energy model (``pemn_fl.timeline``: the clients draw their link by the run's seed;
devices: recent phones; server: a laptop; Flower 1.42's polling, and with ``--transport
ideal`` none), and reports across seeds per profile (``pemn_fl.seeds.aggregate_time``): the
target (the frontier's, FedAvg's seed-mean best - 1 pt, or with ``--window`` the windowed
one), time and energy to it per method and seed, FedAvg's multiples, and the time-budget
table (best accuracy within 1 min, 3 min, 10 min, ... of simulated time, the leader, and
whether its lead is clear). Nothing is trained again.

Writes ``OUT/study.md`` and ``OUT/study.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import fresh_runs
from pemn_fl import clientlog, profiles
from pemn_fl import seeds as S
from pemn_fl import timeline as T
from pemn_fl import timing as TM
from pemn_fl import window as W
from pemn_fl.report import read_rounds
from pemn_fl.timesummary import duration, energy

ROOT = Path(__file__).resolve().parents[1]


def seed_runs(frontier: Path, methods: list[str] | None) -> dict[int, list[Path]]:
    """seed -> the run directories of every method on it (the reported configurations'
    runs under ``fresh/``, ``bench.fresh_runs``)."""
    out: dict[int, list[Path]] = {}
    for method, by_seed in fresh_runs.reported_runs(frontier).items():
        if methods and method not in methods:
            continue
        for seed, run in by_seed.items():
            out.setdefault(seed, []).append(run)
    return out


@dataclass(frozen=True)
class Record:
    """What the time model needs of one finished run, read once for every link."""

    rounds: pd.DataFrame
    clients: pd.DataFrame
    partitions: list[int]
    deadline: float


def records(runs: dict[int, list[Path]], horizon: int | None) -> dict[int, list[Record]]:
    """Per seed, every run's rounds (up to ``horizon``), per-client rows and settings."""
    out: dict[int, list[Record]] = {}
    for seed, dirs in runs.items():
        for run in dirs:
            rounds = read_rounds(run / "rounds.csv")
            if horizon is not None:
                rounds = rounds[rounds["round"] <= horizon]
            config = json.loads((run / "config.json").read_text())["settings"]
            out.setdefault(seed, []).append(Record(
                rounds, clientlog.read(run / "clients.csv"),
                list(range(int(config["min-nodes"]))),  # every client of the run
                float(config.get("round-deadline", 3600.0))))  # fmt: skip
    return out


def timed_frames(recorded: dict[int, list[Record]], link: str,
                 transport: str) -> dict[int, pd.DataFrame]:  # fmt: skip
    """Per seed, every method's rounds with the time model's columns under ``link``."""
    server = profiles.server_device("laptop")
    frames = {}
    for seed, runs in recorded.items():
        parts = []
        for r in runs:
            pop = profiles.population(link, "phone", r.partitions, seed)
            parts.append(TM.replay(r.rounds, r.clients, pop.links, pop.devices, server,
                                  transport=transport, deadline=r.deadline, seed=seed))
        frames[seed] = pd.concat(parts, ignore_index=True)
    return frames


def radio_free(spec: str) -> list[str]:
    """The links of a profile or mix that have no radio power model (a wired line, a
    satellite terminal, NB-IoT: no cited figures), so their energy is compute alone."""
    if Path(spec).suffix == ".csv":  # a trace names its radios per row
        return []
    known = profiles.links()
    names = [name for name, _ in profiles.parse_mix(spec, list(known), "link")]
    return [name for name in names if known[name].radio is None]


def section(profile: str, summary: dict) -> str:
    """One profile's markdown: time and energy to the target, then the time budgets."""
    lines = [f"### {profiles.display(profile)} (`{profile}`)", "",
             "| method | reached | time to target (mean) | less time than FedAvg (per seed) "
             "| energy to target (mean) | less energy than FedAvg (per seed) |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def span(per: dict | None) -> str:
        vals = [v for v in (per or {}).values() if v is not None]
        if not vals:
            return "-"
        text = f"{min(vals):.1f}–{max(vals):.1f}x" if len(vals) > 1 else f"{vals[0]:.1f}x"
        return text if len(vals) == len(per or {}) else f"{text} ({len(vals)}/{len(per or {})})"

    radioless = radio_free(profile)
    if radioless:
        lines[1:1] = ["", f"No cited radio power model for {', '.join(radioless)} "
                      "(pemn_fl/profiles.toml): energy there is the devices' compute alone.", ""]
    for method, m in summary["methods"].items():
        lines.append(f"| {method} | {m['reached_target']}/{m['seeds']} "
                     f"| {duration(m['time_to_target_mean']['mean'])} "
                     f"| {span(m.get('less_time_than_fedavg'))} "
                     f"| {energy(m['energy_to_target_mean']['mean'])} "
                     f"| {span(m.get('less_energy_than_fedavg'))} |")
    lines += ["", "Best accuracy (%) within a budget of simulated time:", "",
              S.budget_markdown(summary["time_budgets"], unit=duration), ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.time_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frontier", nargs="+",
                   help="seeds frontier directories (with fresh/); several are read as one, "
                   "e.g. a converged frontier and a lever study run beside it; DIR:m1,m2 "
                   "reads only those methods there (a method in two directories: say which)")
    p.add_argument("--profiles", default="fibre,lte,3g,geo,nbiot",
                   help="comma list of link profiles to put the runs on")
    p.add_argument("--methods", default="", help="comma list (default: every method run)")
    p.add_argument("--transport", default="flower", choices=T.TRANSPORTS,
                   help="flower (Flower 1.42's polling) or ideal (the links and devices alone)")
    p.add_argument("--horizon", type=int, default=None, help="read the runs up to this round")
    p.add_argument("--window", action="store_true",
                   help="the windowed target (pemn_fl.window) instead of the best round's")
    p.add_argument("--out", type=Path, required=True,
                   help="output directory (study.md, study.json)")
    return p


def frontier_arg(text: str, methods: list[str] | None) -> tuple[Path, list[str] | None]:
    """``DIR`` or ``DIR:m1,m2``: the directory and the methods to read there (``--methods``
    narrows every directory alike)."""
    path, only = text, ""
    if ":" in text and not Path(text).exists():
        path, _, only = text.rpartition(":")
    picked = [m for m in only.split(",") if m] or None
    if picked and methods:
        picked = [m for m in picked if m in methods]
    return Path(path), picked or methods


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m for m in args.methods.split(",") if m] or None
    runs: dict[int, list[Path]] = {}
    frontiers = [frontier_arg(text, methods) for text in args.frontier]
    for frontier, picked in frontiers:
        try:
            found = seed_runs(frontier, picked)
        except ValueError as err:  # fresh/ holds two configurations and no record of which
            print(f"error: {err}", file=sys.stderr)
            return 2
        for seed, dirs in found.items():
            runs.setdefault(seed, []).extend(dirs)
    names = " ".join(args.frontier)
    for seed, dirs in runs.items():
        methods_of = [d.parent.name.split("__")[0] for d in dirs]
        twice = sorted({m for m in methods_of if methods_of.count(m) > 1})
        if twice:
            print(f"error: {', '.join(twice)} ran in more than one of {names} (seed {seed}); "
                  "name one directory per method (DIR:method,method), or pick with --methods",
                  file=sys.stderr)  # fmt: skip
            return 2
    if not runs:
        print(f"error: no runs under {names} (each needs fresh/)", file=sys.stderr)
        return 2
    recorded = records(runs, args.horizon)  # read once, replayed on every link
    report: dict[str, object] = {}
    sections = []
    for profile in [x.strip() for x in args.profiles.split(",") if x.strip()]:
        frames = timed_frames(recorded, profile, args.transport)
        if args.window:
            frames = W.smoothed_frames(frames)
        summary = S.aggregate_time(frames)
        report[profile] = summary
        sections.append(section(profile, summary))
        print(f"{profile}: done", flush=True)
    first = next(iter(report.values()))
    command = (f"python -m bench.time_study {names} --profiles {args.profiles} "
               f"--transport {args.transport} --out {args.out}"
               + (f" --methods {args.methods}" if args.methods else "")
               + (f" --horizon {args.horizon}" if args.horizon else "")
               + (" --window" if args.window else ""))
    target = first["target_accuracy"]  # type: ignore[index]
    md = "\n".join([
        f"# {' + '.join(f.name for f, _ in frontiers)}: time and energy to the target "
        "under several links", "",
        f"Command: `{command}`", "",
        f"Seeds {', '.join(map(str, first['seeds']))}; target "  # type: ignore[index]
        + ("none" if target is None else f"{100 * target:.2f} %")
        + (" (windowed)" if args.window else " (FedAvg's seed-mean best - 1 pt)")
        + f"; transport: {args.transport}; devices: recent phones (`phone`); server: `laptop`. "
        "Every client draws its link by the run's seed; every run is replayed from its own "
        "record (clients.csv), nothing trained again. Less time / energy than FedAvg: "
        "FedAvg's time (energy) to the target over the method's, on the same seed.", "",
        *sections])  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.md").write_text(md + "\n")
    (args.out / "study.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
