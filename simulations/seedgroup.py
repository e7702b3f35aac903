"""``simulations.run --seeds S1,S2,...``: the same settings once per seed into
``OUT/seed-<s>/``, then the across-seeds summary and banded figure (``pemn_fl.seeds``).
Resumable seed by seed."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import settings_from
from simulations import fresh
from simulations.engine import Engine
from simulations.outdir import lock_out
from simulations.resume import resumed


def parse_seeds(text: str) -> list[int]:
    """``--seeds 1,2,3``: distinct seeds, in the order given."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingsError(f"--seeds {text}: give a comma list of integers, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SettingsError(f"--seeds {text}: give distinct seeds, e.g. 1,2,3")
    for seed in seeds:
        RunSettings(seed=seed)  # the same range check as --seed
    return seeds


def group_of(out: Path) -> list[int] | None:
    """The seeds of a ``--seeds`` group directory (its config.json), or ``None``."""
    try:
        seeds = json.loads((out / "config.json").read_text()).get("seeds")
    except (OSError, ValueError, AttributeError):
        return None
    return [int(s) for s in seeds] if isinstance(seeds, list) else None


def run_seeds(settings: RunSettings | None, seeds: list[int], out: Path,
              group_engine: Engine | None = None, quiet: bool = False) -> int:  # fmt: skip
    """``--seeds``: the same settings once per seed into ``out/seed-<s>/``, then the
    across-seeds summary (``pemn_fl.seeds``). Resumable: a finished seed is kept, a killed
    one resumed from its checkpoint, one that never finished a round started again.
    ``settings`` is ``None`` when a group is resumed (its config.json says them)."""
    from pemn_fl import seeds as S
    from pemn_fl.checkpoint import CheckpointError

    for seed in seeds:
        run = out / S.SEED_DIR.format(seed)
        if (run / "summary.json").is_file():
            print(f"seed {seed}: finished, kept ({run})")
            continue
        try:
            if (run / "checkpoint" / "server.pkl").is_file():
                run_settings, engine = resumed(run)
                lock, resume = lock_out(run), True
            else:
                if settings is None:  # resuming a group: the settings of its config.json
                    settings, group_engine = group_config(out)
                assert group_engine is not None  # a fresh group passes its engine
                engine = group_engine
                lock, run_settings = fresh.start(dataclasses.replace(settings, seed=seed),
                                                 engine, run, overwrite=True)  # fmt: skip
                resume = False
        except (SettingsError, CheckpointError, OSError, ValueError, KeyError) as exc:
            print(f"error: seed {seed}: {exc}", file=sys.stderr)
            return 2
        code = fresh.execute(run_settings, engine, run, resume, quiet)
        lock.close()
        if code:
            return code
    summarise(out, seeds, settings.bytes_level if settings else "wire")
    return 0


def group_config(out: Path) -> tuple[RunSettings, Engine]:
    """A group's settings and engine from its config.json (its seeds run with their own)."""
    config = json.loads((out / "config.json").read_text())
    return settings_from({**config["settings"], "checkpoint-dir": ""}), Engine.from_config(config)


def summarise(out: Path, seeds: list[int], level: str) -> None:
    """The group's summary.json and banded figure from its seeds' runs, and the table; runs
    made with ``--link`` (the time model's columns in every rounds.csv) also get the summary
    in simulated time and energy (its ``time`` section) and a banded figure against time."""
    from pemn_fl import seeds as S
    from pemn_fl.timing import TIME_COLUMNS

    frames = S.load({s: out / S.SEED_DIR.format(s) for s in seeds})
    summary = S.aggregate(frames, level=level)
    title = f"{len(seeds)} seeds: {', '.join(map(str, seeds))}"
    timed = all(set(TIME_COLUMNS) <= set(frame.columns) for frame in frames.values())
    if timed:
        summary["time"] = S.aggregate_time(frames)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    S.plot_bands({"": frames}, out / "bandwidth_accuracy.png",
                 level=str(summary["bytes_level"]), title=title,
                 target=summary["target_accuracy"])  # type: ignore[arg-type]
    print(S.aggregate_table(summary))
    if timed:
        S.plot_bands({"": frames}, out / "time_accuracy.png", title=title,
                     target=summary["target_accuracy"], axis="time")  # type: ignore[arg-type]
        print(S.time_table(summary["time"]))  # type: ignore[arg-type]
        print(f"across seeds: {out}/summary.json, {out}/bandwidth_accuracy.png, "
              f"{out}/time_accuracy.png")
    else:
        print(f"across seeds: {out}/summary.json, {out}/bandwidth_accuracy.png")
