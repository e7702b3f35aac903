"""One run of ``simulations.run`` from its settings: check the data in this process
(``check_data``), prepare and lock a fresh run directory with its config.json first
(``start``), then simulate into it and report (``execute``, which a resumed run and each seed
of a group use too)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import IO

from pemn_fl.config import RunSettings
from simulations.engine import Engine, simulate
from simulations.outdir import prepare_out, versions


def check_data(settings: RunSettings, clients: int) -> None:
    """Fail fast, in the main process, with the loader's own clear message."""
    from pemn_fl import networks as N
    from pemn_fl.partition import partition_for

    N.dataset_of(settings)
    partition_for(settings.dataset, settings.data_dir or None, settings.seed, clients,
                  settings.partition, settings.alpha, settings.classes_per_client)  # fmt: skip
    N.masked_model(settings)
    N.dense_model(settings)


def start(settings: RunSettings, engine: Engine, out: Path, overwrite: bool,
          extra: dict[str, object] | None = None) -> tuple[IO[str], RunSettings]:  # fmt: skip
    """Prepare and lock a fresh run directory; write its config.json first (so even a run
    that is killed says what it was). Returns the lock and the settings with the run's
    checkpoint directory (every run can be resumed)."""
    lock = prepare_out(out, overwrite)
    checkpoints = (out / "checkpoint").resolve()
    shutil.rmtree(checkpoints, ignore_errors=True)  # never a stale one (--overwrite)
    settings = dataclasses.replace(settings, checkpoint_dir=str(checkpoints))
    config = {**engine.config(), "command": " ".join(sys.argv),
              "settings": settings.to_run_config(), **(extra or {}),
              "versions": versions()}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return lock, settings


def execute(settings: RunSettings, engine: Engine, out: Path, resume: bool,
            quiet: bool) -> int:  # fmt: skip
    """Run one simulation into ``out`` (prepared by ``start`` or a resume) and report it."""
    from pemn_fl.checkpoint import CheckpointError
    from pemn_fl.report import summary_table
    from pemn_fl.server_app import ProtocolError, write_outputs
    from pemn_fl.timesummary import time_lines

    clients = engine.clients
    print(f"pemn-fl: {clients} clients, {settings.num_server_rounds} rounds, "
          f"{settings.dataset}/{settings.model}, methods {settings.methods}, seed "
          f"{settings.seed} -> {out}" + (" (resumed)" if resume else ""))  # fmt: skip
    started = time.monotonic()
    try:
        book, summary = simulate(settings, engine, not quiet, out, resume=resume)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProtocolError as exc:
        print(f"error: {exc}. Finished rounds are in {out / 'rounds.csv'}", file=sys.stderr)
        return 1
    summary["wall_s"] = round(time.monotonic() - started, 1)
    title = f"{settings.dataset} / {settings.model}, {clients} clients"
    write_outputs(out, book, summary, title=title)  # type: ignore[arg-type]
    print(summary_table(summary) + time_lines(summary))
    print(f"wall time {summary['wall_s']} s; results in {out}/ (rounds.csv, summary.json, "
          "bandwidth_accuracy.png, config.json)")
    return 0
