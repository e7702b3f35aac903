"""``simulations.run --resume DIR``: a killed or interrupted run continued from its last
finished round, with the settings, engine and checkpoint in DIR, every file it will read
back checked before Ray starts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import get as get_method
from pemn_fl.methods import settings_from
from simulations.engine import Engine

if TYPE_CHECKING:
    from pemn_fl.checkpoint import ServerCheckpoint


def resumed(out: Path) -> tuple[RunSettings, Engine]:
    """``--resume DIR``: the run's settings and engine from DIR/config.json.

    The checkpoint directory is the one inside DIR (the run may have been moved). Every file
    the resume will read back is checked here, before Ray starts.
    """
    try:
        config = json.loads((out / "config.json").read_text())
        settings = settings_from(config["settings"])
        engine = Engine.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"--resume {out}: no readable config.json of a simulations.run "
                            f"run there ({type(exc).__name__}: {exc})") from None  # fmt: skip
    checkpoints = (out / "checkpoint").resolve()
    if not (checkpoints / "server.pkl").is_file():
        raise SettingsError(f"--resume {out}: no checkpoint in it (the run stopped before its "
                            "first round ended); start it again")  # fmt: skip
    # Every file the resume will read back, checked here, before Ray starts: a damaged one is
    # one error line, never a traceback in a worker or a client silently starting over.
    from pemn_fl import checkpoint as C
    from pemn_fl.report import columns_for
    from pemn_fl.server_app import CLIENTS_FILE

    saved = load_server_of_run(checkpoints, out / "config.json")
    C.finished_rows(out / "rounds.csv", settings.method_list, saved,
                    settings.num_server_rounds, columns_for(bool(settings.link)))  # fmt: skip
    C.check_clients(checkpoints)
    # Every node's newest state is that of the last round it trained in: a deleted file
    # (or folder) would have that node train from older state, and the run drift silently.
    C.check_client_states(checkpoints, saved, method_names_of(settings), settings,
                          out / CLIENTS_FILE)  # fmt: skip
    return dataclasses.replace(settings, checkpoint_dir=str(checkpoints)), engine


def load_server_of_run(directory: Path, config_file: Path) -> ServerCheckpoint:
    """The server checkpoint in ``directory`` of the run whose ``config_file`` it is
    (``simulations.run --resume`` and ``simulations.deploy --resume`` alike).

    A checkpoint pickles the classes of the code that wrote it, so after a change of those
    classes only that code reads it (a session's killed 100-round sweep run is resumed that
    way): the error then names the commit the run's config.json records and how to resume
    with it."""
    from pemn_fl import checkpoint as C

    try:
        return C.load_server(directory)
    except C.CheckpointError as exc:
        raise C.CheckpointError(f"{exc}{_other_code_hint(config_file)}") from None


def _other_code_hint(config_file: Path) -> str:
    """Empty when the run's commit is this code's, or either is unknown."""
    from simulations.outdir import git_commit

    try:
        stamp = json.loads(config_file.read_text()).get("versions")
    except (OSError, ValueError, AttributeError):
        stamp = None
    written = str(stamp.get("pemn-fl-commit", "unknown")) if isinstance(stamp, dict) else "unknown"
    here = git_commit()
    written, here = written.split("+")[0], here.split("+")[0]  # a dirty tree: its commit
    if "unknown" in (written, here) or written == here:
        return ""
    return (f"; it was written at commit {written[:7]}, this code is {here[:7]}: resume it "
            f"with the code that wrote it (git worktree add --detach ../pemn-{written[:7]} "
            f"{written[:7]}, then run the same command there) or start the run again")


def method_names_of(settings: RunSettings) -> list[str]:
    """The run's method names in ``methods`` order (a plug-in's spec is its module path;
    rows and checkpoints name it by its ``name``)."""
    return [get_method(spec).name for spec in settings.method_list]
