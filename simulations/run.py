"""``python -m simulations.run --clients 20``: PEMN-FL vs dense FedAvg in Flower's simulation.

Both methods run in one Flower simulation (Ray backend), on the same partitions, the same
sampled clients per round, the same rounds and local epochs. Every message in both
directions is metered (``pemn_fl.accounting``). Writes ``rounds.csv``, ``summary.json``,
``bandwidth_accuracy.png`` and ``config.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import IO

from pemn_fl.config import SHARED, RunSettings, SettingsError
from pemn_fl.methods import get as get_method
from pemn_fl.methods import is_plugin, settings_from, unread
from pemn_fl.methods import names as method_names
from pemn_fl.methods import options as method_options
from pemn_fl.methods import users as method_users
from pemn_fl.options import add_to_parser, from_args

DEFAULTS = RunSettings()
# How long the simulator waits for a round's replies. Not the round deadline: in simulation
# each client judges that on its own work (pemn_fl.faults), since the engine's few actors
# serve the clients in turn and queueing is no client's fault.
SIMULATION_WALL_TIMEOUT = 3600.0


def build_parser(specs: Iterable[str] = ()) -> argparse.ArgumentParser:
    """The command line: the run's own flags, then the shared settings and every method's
    own options (those of the registered methods and of the plug-ins among ``specs``), each
    from its declaration."""
    p = argparse.ArgumentParser(
        prog="python -m simulations.run",
        description="Federated PEMN (seed + bit-packed masks) vs dense FedAvg: bytes vs accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=10, help="number of simulated clients")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="run the same settings once per seed (each changes everything "
                   "seeded: prototype, partition, client sample, noise, faults) into "
                   "OUT/seed-<s>/, then write the across-seeds summary.json and banded figure "
                   "to OUT (--resume OUT resumes the unfinished seed)")
    p.add_argument("--cpus-per-client", type=float, default=1.0,
                   help="Ray CPUs per client actor (2 cores -> 2 clients side by side)")
    p.add_argument("--gpus-per-client", type=float, default=0.0,
                   help="Ray GPUs per client actor (e.g. 0.25: four clients share a GPU); "
                   "with --device cuda or auto")
    p.add_argument("--ray-address", default="", metavar="HOST:PORT",
                   help="run the clients on an existing Ray cluster (ray start --head ...) "
                   "instead of a private one on this machine")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default results/runs/<timestamp>)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out directory that already holds files")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the killed or interrupted run in DIR from its last finished "
                   "round, with the settings in DIR/config.json (give no other settings)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_to_parser(p, SHARED, title="run settings (every method)", extra=_shared_extra())
    add_to_parser(p, method_options(specs).values(), method_users(specs))
    return p


def _shared_extra() -> dict[str, str]:
    """What the shared settings' help adds that only this layer knows: the registered methods
    and the time model's profiles."""
    from pemn_fl.profiles import devices, links

    return {"methods": "built in: " + ", ".join(method_names()),
            "link": "profiles: " + ", ".join(links()),
            "client-device": "profiles: " + ", ".join(devices()),
            "server-device": "profiles: " + ", ".join(devices())}


def plugin_specs(argv: list[str] | None) -> list[str]:
    """The plug-in methods named by ``--methods`` (their options join the command line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--methods", default="")
    known, _ = pre.parse_known_args(argv)
    specs = [m.strip() for m in known.methods.split(",") if is_plugin(m.strip())]
    importable = []
    for spec in specs:  # one that does not import is reported by settings_from, in one line
        try:
            get_method(spec)
            importable.append(spec)
        except KeyError:
            pass
    return importable


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings from the command line: every declared setting and method option
    by its declaration (``pemn_fl.options.from_args``), checked by
    ``pemn_fl.methods.settings_from``; the number of clients is the server's ``min-nodes``.
    Flags that are no setting (``--out``, a deployment's ``--nodes``) are left out."""
    plugins = plugin_specs(["--methods", args.methods])
    config = from_args(args, [*SHARED, *method_options(plugins).values()])
    return settings_from({**config, "min-nodes": args.clients})


def flags_given(parser: argparse.ArgumentParser, args: argparse.Namespace,
                ignore: Iterable[str] = ()) -> list[str]:  # fmt: skip
    """The flags of ``args`` set to other than their default (as typed: ``--rounds``),
    leaving out the destinations in ``ignore``."""
    defaults = vars(parser.parse_args([]))
    flag_of = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return [flag_of.get(k, "--" + k.replace("_", "-")) for k, v in vars(args).items()
            if k not in ignore and v != defaults.get(k)]  # fmt: skip


def unread_note(settings: RunSettings) -> str | None:
    """The rule for method options the chosen methods ignore, in ``simulations.run`` and
    ``simulations.deploy`` alike: an option set to other than its default that no method of
    the run reads is *said*, in one ``note:`` line before anything starts (the run goes on:
    it is valid, the value just changes nothing). Not refused, because a study's shared
    preset legitimately carries one method's options into every method's run
    (``bench.accuracy_frontier``'s ``--margin 0.1`` reaches its FedAvg runs); silently
    dropped, it would let ``--methods fedavg --density 0.5`` pass for a density study."""
    ignored = unread(settings)
    if not ignored:
        return None
    said = [f"--{name} {settings[name]} (read by {', '.join(who) or 'no method'})"
            for name, who in ignored.items()]  # fmt: skip
    them = "it" if len(said) == 1 else "them"
    return (f"note: {'; '.join(said)}: no method of this run ({settings.methods}) reads "
            f"{them}, so the value changes nothing")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Engine:
    """Where the Simulation Engine runs the clients: how many, with what resources, and on
    which Ray cluster (none: a private one on this machine). Not an experiment setting (the
    results do not depend on it), so it is not in ``RunSettings``; config.json keeps it for
    ``--resume``."""

    clients: int
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    ray_address: str = ""  # an existing cluster (``ray start --head``); "" = start one here

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Engine:
        return cls(args.clients, args.cpus_per_client, args.gpus_per_client, args.ray_address)

    @classmethod
    def from_config(cls, config: dict[str, object]) -> Engine:
        return cls(int(config["clients"]), float(config.get("cpus_per_client", 1.0)),  # type: ignore[arg-type]
                   float(config.get("gpus_per_client", 0.0)),  # type: ignore[arg-type]
                   str(config.get("ray_address", "")))  # fmt: skip

    def config(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Resources Ray can grant: otherwise it never places a client actor and the run
        hangs (``ActorPool is empty``). On a cluster of our own, this machine's CPUs and
        GPUs bound them; an existing cluster is checked by Ray itself when we join it."""
        if self.clients < 1:
            raise SettingsError(f"--clients {self.clients}: need at least 1 client")
        for flag, value in (("--cpus-per-client", self.cpus_per_client),
                            ("--gpus-per-client", self.gpus_per_client)):  # fmt: skip
            if not (math.isfinite(value) and value >= 0):
                raise SettingsError(f"{flag} {value}: must be a finite number >= 0")
        if self.cpus_per_client <= 0:
            raise SettingsError(f"--cpus-per-client {self.cpus_per_client}: must be > 0")
        if self.ray_address:
            reach_cluster(self.ray_address)
            return
        cpus = os.cpu_count() or 1
        if self.cpus_per_client > cpus:
            raise SettingsError(f"--cpus-per-client {self.cpus_per_client}: must be a number "
                                f"in (0, {cpus}] (this machine has {cpus} CPUs)")  # fmt: skip
        if self.gpus_per_client > 0:
            import torch

            gpus = torch.cuda.device_count()
            if self.gpus_per_client > gpus:
                raise SettingsError(f"--gpus-per-client {self.gpus_per_client}: this machine "
                                    f"has {gpus} GPU(s) PyTorch can use")  # fmt: skip

    def backend_config(self) -> dict[str, object]:
        """Flower's Simulation Engine backend config (Ray's ``init`` arguments)."""
        init: dict[str, object] = {"logging_level": "ERROR", "log_to_driver": True}
        if self.ray_address:
            init["address"] = self.ray_address
        return {"client_resources": {"num_cpus": self.cpus_per_client,
                                     "num_gpus": self.gpus_per_client},
                "init_args": init}  # fmt: skip


def reach_cluster(address: str, timeout: float = 5.0) -> None:
    """A Ray head answers at ``address`` (HOST:PORT): Ray itself would retry for minutes
    before failing with a long traceback, so a TCP connection is tried first."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SettingsError(f"--ray-address {address}: give HOST:PORT of a Ray head, e.g. "
                            "127.0.0.1:6379")  # fmt: skip
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SettingsError(f"--ray-address {address}: no Ray cluster answers there "
                            f"({exc.strerror or exc}); start one with `ray start --head "
                            f"--port {port}` or drop --ray-address") from None  # fmt: skip


def check_cpus(cpus_per_client: float) -> None:
    """A client's CPU share must fit on this machine (``Engine.check``)."""
    Engine(1, cpus_per_client).check()


def resumed(args: argparse.Namespace) -> tuple[Path, RunSettings, Engine]:
    """``--resume DIR``: the run's directory, settings and engine from its config.json.

    The checkpoint directory is the one inside DIR (the run may have been moved). Any other
    setting on the command line is an error: a resumed run is the same run.
    """
    given = flags_given(build_parser(), args, ignore=("resume", "quiet"))
    if given:
        raise SettingsError(f"--resume takes its settings from the run's config.json; drop "
                            f"{', '.join(given)}")  # fmt: skip
    out = args.resume
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

    saved = C.load_server(checkpoints)
    C.finished_rows(out / "rounds.csv", settings.method_list, saved,
                    settings.num_server_rounds, columns_for(bool(settings.link)))  # fmt: skip
    C.check_clients(checkpoints)
    # Every node's newest state is that of the last round it trained in: a deleted file
    # (or folder) would have that node train from older state, and the run drift silently.
    C.check_client_states(checkpoints, saved, method_names_of(settings), settings,
                          out / CLIENTS_FILE)  # fmt: skip
    return out, dataclasses.replace(settings, checkpoint_dir=str(checkpoints)), engine


def method_names_of(settings: RunSettings) -> list[str]:
    """The run's method names in ``methods`` order (a plug-in's spec is its module path;
    rows and checkpoints name it by its ``name``)."""
    return [get_method(spec).name for spec in settings.method_list]


LOCK_FILE = ".pemn-fl.lock"


def lock_out(out: Path) -> IO[str]:
    """Hold ``out`` for this process: a second run on the same directory (at once, even with
    --overwrite or --resume) is refused instead of mixing its files with ours.

    An advisory ``flock`` on ``out/.pemn-fl.lock``: the kernel releases it when the process
    ends however it ends (a SIGKILL leaves no stale lock to clean up). Keep the returned
    file open for as long as the run writes there.
    """
    import fcntl

    handle = (out / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SettingsError(f"--out {out}: another run ({owner}) is writing there; wait for it "
                            "or choose another directory") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def prepare_out(out: Path, overwrite: bool) -> IO[str]:
    """Create ``out``, lock it (``lock_out``) and prove it writable before Ray starts; never
    clobber silently. Returns the lock, held until the process ends."""
    if out.exists() and not out.is_dir():
        raise SettingsError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_out(out)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"--out {out}: cannot write there ({exc.strerror})") from None
    if any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        lock.close()
        raise SettingsError(f"--out {out}: already holds files; choose a new directory or "
                            "pass --overwrite")  # fmt: skip
    return lock


def git_commit() -> str:
    """The commit the code ran at (``+dirty`` with uncommitted changes), or ``unknown``."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pemn_fl", "simulations"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty.strip() else "")) if head else "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "pemn-fl-commit": git_commit()}
    for pkg in ("pemn-fl", "flwr", "flwr-datasets", "torch", "numpy", "bitarray", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def check_data(settings: RunSettings, clients: int) -> None:
    """Fail fast, in the main process, with the loader's own clear message."""
    from pemn_fl import networks as N
    from pemn_fl.partition import partition_for

    N.dataset_of(settings)
    partition_for(settings.dataset, settings.data_dir or None, settings.seed, clients,
                  settings.partition, settings.alpha, settings.classes_per_client)  # fmt: skip
    N.masked_model(settings)
    N.dense_model(settings)


def simulate(settings: RunSettings, engine: Engine, progress: bool = True,
             out: Path | None = None, resume: bool = False,
             ) -> tuple[object, dict[str, object]]:  # fmt: skip
    """Run the federation in Flower's Simulation Engine; return (RoundLog, summary)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
    from tqdm import tqdm

    from pemn_fl.client_app import build_client_app
    from pemn_fl.server_app import run_experiment

    # Flower's INFO/deprecation chatter would bury the progress bar; our own warnings
    # (rejected replies) still show through the pemn_fl logger.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    total = (settings.num_server_rounds + 1) * len(settings.method_list)
    bar = tqdm(total=total, disable=not progress, unit="round", file=sys.stdout)
    holder: dict[str, object] = {}
    from pemn_fl.report import LEVELS

    up, down = LEVELS[settings.bytes_level]
    sent: dict[str, int] = {}  # running bytes per method at the chosen level

    def on_round(row: dict[str, object]) -> None:
        method = str(row["method"])
        sent[method] = sent.get(method, 0) + int(row[up]) + int(row[down])  # type: ignore[call-overload]
        bar.set_description(f"{method:>6} round {row['round']:>3}")
        bar.set_postfix(acc=f"{row['accuracy']:.3f}", MB=f"{sent[method] / 1e6:.3f}")
        bar.update(1)

    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: object) -> None:
        holder["book"], holder["summary"] = run_experiment(
            grid, settings, on_round, csv_path=None if out is None else out / "rounds.csv",
            models_dir=None if out is None else out / "models", resume=resume,
            wall_timeout=max(settings.round_deadline, SIMULATION_WALL_TIMEOUT),
        )

    run_simulation(
        server_app=server,
        client_app=build_client_app(settings),
        num_supernodes=engine.clients,
        backend_config=engine.backend_config(),
    )
    bar.close()
    if "summary" not in holder:
        raise RuntimeError("the simulation ended without results; see the Flower log above")
    return holder["book"], holder["summary"]  # type: ignore[return-value]


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


def run_seeds(args: argparse.Namespace, settings: RunSettings | None, seeds: list[int],
              out: Path, group_engine: Engine | None = None) -> int:  # fmt: skip
    """``--seeds``: the same settings once per seed into ``out/seed-<s>/``, then the
    across-seeds summary (``pemn_fl.seeds``). Resumable: a finished seed is kept, a killed
    one resumed from its checkpoint, one that never finished a round started again."""
    from pemn_fl import seeds as S
    from pemn_fl.checkpoint import CheckpointError

    for seed in seeds:
        run = out / S.SEED_DIR.format(seed)
        if (run / "summary.json").is_file():
            print(f"seed {seed}: finished, kept ({run})")
            continue
        try:
            if (run / "checkpoint" / "server.pkl").is_file():
                resume_args = argparse.Namespace(**{**vars(build_parser().parse_args([])),
                                                    "resume": run})  # fmt: skip
                run_out, run_settings, engine = resumed(resume_args)
                lock = lock_out(run_out)
                resume = True
            else:
                if settings is None:  # resuming a group: the settings of its config.json
                    config = json.loads((out / "config.json").read_text())
                    settings = settings_from({**config["settings"], "checkpoint-dir": ""})
                    group_engine = Engine.from_config(config)
                assert group_engine is not None  # a fresh group passes its engine
                engine = group_engine
                lock, run_settings = start(dataclasses.replace(settings, seed=seed), engine,
                                           run, overwrite=True)  # fmt: skip
                resume = False
        except (SettingsError, CheckpointError, OSError, ValueError, KeyError) as exc:
            print(f"error: seed {seed}: {exc}", file=sys.stderr)
            return 2
        code = execute(run_settings, engine, run, resume, args.quiet)
        lock.close()
        if code:
            return code
    summary = S.aggregate(S.load({s: out / S.SEED_DIR.format(s) for s in seeds}),
                          level=(settings.bytes_level if settings else "wire"))  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    S.plot_bands({"": S.load({s: out / S.SEED_DIR.format(s) for s in seeds})},
                 out / "bandwidth_accuracy.png", level=str(summary["bytes_level"]),
                 title=f"{len(seeds)} seeds: {', '.join(map(str, seeds))}",
                 target=summary["target_accuracy"])  # type: ignore[arg-type]
    print(S.aggregate_table(summary))
    print(f"across seeds: {out}/summary.json, {out}/bandwidth_accuracy.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser(plugin_specs(argv)).parse_args(argv)
    from pemn_fl.checkpoint import CheckpointError
    from pemn_fl.data import DataError
    from pemn_fl.models import ModelError
    from pemn_fl.partition import PartitionError

    seeds, group = None, None
    try:
        if args.resume is not None:
            group = group_of(args.resume)
            if group is not None:  # a --seeds group: resume seed by seed
                if args.seeds is not None or args.out is not None:
                    raise SettingsError("--resume takes its settings from the run's "
                                        "config.json; drop the other options")  # fmt: skip
                lock = lock_out(args.resume)  # noqa: F841 - held until we exit
                return run_seeds(args, None, group, args.resume)
            if not args.resume.is_dir():
                raise SettingsError(f"--resume {args.resume}: no such directory")
            # Hold the directory before reading it back: another run (a second --resume)
            # may be writing there.
            lock = lock_out(args.resume)  # noqa: F841 - held until we exit
            out, settings, engine = resumed(args)
        else:
            engine = Engine.from_args(args)
            engine.check()
            settings = settings_from_args(args)
            if args.seeds is not None:
                if args.seed != DEFAULTS.seed:
                    raise SettingsError("--seed and --seeds: give one of them")
                seeds = parse_seeds(args.seeds)
        check_data(settings, engine.clients)
    except (SettingsError, DataError, PartitionError, ModelError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.resume is not None:
        return execute(settings, engine, out, True, args.quiet)
    out = args.out or Path("results/runs") / time.strftime("%Y%m%d-%H%M%S")
    note = unread_note(settings)  # said once every check has passed: a refusal says only why
    try:
        if seeds is not None:  # the group directory: its config.json, then one run per seed
            lock, _ = start(settings, engine, out, args.overwrite, extra={"seeds": seeds})
            shutil.rmtree(out / "checkpoint", ignore_errors=True)  # the seeds keep their own
            if note:
                print(note, file=sys.stderr)
            return run_seeds(args, settings, seeds, out, engine)
        lock, settings = start(settings, engine, out, args.overwrite)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    return execute(settings, engine, out, False, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
