"""``python -m simulations.timeline RUN --link 3g``: how long a finished run takes on links.

Replays a run's recorded calls and FLOPs (``clients.csv``, ``rounds.csv``) on the clients'
links and devices with the time and energy model (``pemn_fl.timeline``), without training
anything again, so one run or one seed group can be read under many links. ``--link`` and
``--client-device`` take a profile, a mix (``lte:0.6,3g:0.3,geo:0.1``) or a trace CSV
(``pemn_fl.profiles``); clients draw from them by the run's seed.

Writes to ``--out`` (default ``RUN/timeline-<link>``): ``timeline.csv`` (the rounds with
each round's duration and energy, cumulated), ``timeline.json`` (time and energy to the
target per method, FedAvg's multiples, the population) and ``timeline.png`` (accuracy against
time and against energy); a seed group also gets the across-seeds summary and the
time-budget table. A run made with ``--link`` and no deadline gives the same columns in its
own rounds.csv.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from pemn_fl import profiles as P
from pemn_fl import timeline as T
from pemn_fl import timesummary as TS
from pemn_fl import timing as TM


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulations.timeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory (rounds.csv, clients.csv) or a "
                   "seed group (simulations.run --seeds)")
    p.add_argument("--link", required=True, help="link profile, mix or trace CSV, e.g. 3g, "
                   f"lte:0.6,3g:0.4 (profiles: {', '.join(P.links())})")
    p.add_argument("--client-device", default="phone",
                   help="the clients' device profile, mix or trace CSV (profiles: "
                   f"{', '.join(P.devices())})")
    p.add_argument("--server-device", default="laptop",
                   help="the server's device profile: its aggregation and evaluation time")
    p.add_argument("--transport", choices=T.TRANSPORTS, default="flower",
                   help="flower: Flower 1.42's polling as deployed; ideal: no polling, the "
                   "links and devices alone")
    p.add_argument("--deadline", type=float, default=None,
                   help="round deadline in simulated seconds (default: the run's "
                   "--round-deadline)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default RUN/timeline-<link>)")
    return p


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", Path(spec).stem if spec.endswith(".csv")
                  else spec).strip("-")  # fmt: skip


def run_settings(run: Path) -> dict[str, object]:
    try:
        return json.loads((run / "config.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise P.ProfileError(f"{run}: no readable config.json of a run ({exc})") from None


def timed_run(run: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, P.Population]:
    """One run's rounds with the time model's columns, and who its clients were."""
    from pemn_fl import clientlog
    from pemn_fl.report import read_rounds

    settings = run_settings(run)
    rounds = read_rounds(run / "rounds.csv")
    clients_path = run / "clients.csv"
    if not clients_path.is_file() or "server_flops" not in rounds.columns:
        raise P.ProfileError(f"{run}: recorded before the time model (no clients.csv or no "
                             "server_flops); run it again to time it")  # fmt: skip
    clients = clientlog.read(clients_path)
    partitions = list(range(int(settings.get("min-nodes", 0)) or
                            int(clients["partition"].max()) + 1))  # fmt: skip
    seed = int(settings.get("seed", 0))
    population = P.population(args.link, args.client_device, partitions, seed)
    deadline = args.deadline if args.deadline is not None else float(
        settings.get("round-deadline", 3600.0))  # fmt: skip
    timed = TM.replay(rounds, clients, population.links, population.devices,
                     P.server_device(args.server_device), transport=args.transport,
                     deadline=deadline, seed=seed)  # fmt: skip
    return timed, population


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pemn_fl import seeds as S
    from pemn_fl.clientlog import ClientsFileError
    from pemn_fl.report import RoundsFileError, fedavg_target

    out = args.out or args.run / f"timeline-{slug(args.link)}"
    group = {} if (args.run / "rounds.csv").is_file() else S.seed_dirs(args.run)
    try:
        if args.deadline is not None and not args.deadline > 0:
            raise P.ProfileError(f"--deadline {args.deadline}: give seconds > 0")
        if not group and not (args.run / "rounds.csv").is_file():
            raise P.ProfileError(f"{args.run}: no rounds.csv and no seed-<s>/ runs in it")
        runs = group or {None: args.run}
        timed = {seed: timed_run(run, args) for seed, run in runs.items()}
    except (P.ProfileError, RoundsFileError, ClientsFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"link": args.link, "client_device": args.client_device,
                                 "server_device": args.server_device,
                                 "transport": args.transport, "population": {}}
    for seed, (frame, pop) in timed.items():
        name = "timeline.csv" if seed is None else f"timeline-seed-{seed}.csv"
        frame.to_csv(out / name, index=False)
        report["population"][str(seed)] = pop.describe()  # type: ignore[index]
    if not group:
        frame = timed[None][0]
        summary = TS.summarize_time(frame, fedavg_target(frame))
        report["target_accuracy"] = fedavg_target(frame)
        report["methods"] = summary
        print(TS.table(summary))
        print(TS.sentence(summary, TS.upper_first(TS.where(report))))
    else:
        frames = {seed: frame for seed, (frame, _) in timed.items()}
        summary = S.aggregate_time(frames)
        report.update(summary)
        print(S.time_table(summary))
    (out / "timeline.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    title = f"{args.run.name}: {TS.where(report)}"
    if group:
        S.plot_bands({"": frames}, out / "timeline.png", title=title,
                     target=report["target_accuracy"], axis="time")  # type: ignore[arg-type]
    else:
        from pemn_fl.figure import plot_runs

        plot_runs([out], out / "timeline.png", title=title, x="time")
    print(f"written: {out}/ (timeline.csv, timeline.json, timeline.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
