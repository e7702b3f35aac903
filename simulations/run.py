"""``python -m simulations.run --clients 20``: PEMN-FL vs dense FedAvg in Flower's simulation.

Both methods run in one Flower simulation (Ray backend), on the same partitions, the same
sampled clients per round, the same rounds and local epochs. Every message in both
directions is metered (``pemn_fl.accounting``). Writes ``rounds.csv``, ``summary.json``,
``bandwidth_accuracy.png`` and ``config.json`` to ``--out``.

This module is the command line (the flags, from the declarations) and the choice of mode;
each mode is its own module: a fresh run (``simulations.fresh``), a resumed one
(``simulations.resume``) and a seed group (``simulations.seedgroup``), over the Simulation
Engine (``simulations.engine``) and the run directory (``simulations.outdir``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pemn_fl.checkpoint import CheckpointError
from pemn_fl.config import SHARED, RunSettings, SettingsError
from pemn_fl.data import DataError
from pemn_fl.methods import get as get_method
from pemn_fl.methods import is_plugin, settings_from, unread
from pemn_fl.methods import names as method_names
from pemn_fl.methods import options as method_options
from pemn_fl.methods import users as method_users
from pemn_fl.models import ModelError
from pemn_fl.options import add_to_parser, from_args
from pemn_fl.partition import PartitionError
from simulations import fresh
from simulations.engine import Engine
from simulations.outdir import lock_out
from simulations.resume import resumed
from simulations.seedgroup import group_of, parse_seeds, run_seeds

DEFAULTS = RunSettings()


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(plugin_specs(argv))
    args = parser.parse_args(argv)
    return resume_run(parser, args) if args.resume is not None else fresh_run(args)


# What a run refuses before anything starts, each in one ``error:`` line.
REFUSALS = (SettingsError, DataError, PartitionError, ModelError, CheckpointError)


def fresh_run(args: argparse.Namespace) -> int:
    """A fresh run into ``--out``, or a ``--seeds`` group of them; every check first."""
    try:
        engine = Engine.from_args(args)
        engine.check()
        settings = settings_from_args(args)
        seeds = None
        if args.seeds is not None:
            if args.seed != DEFAULTS.seed:
                raise SettingsError("--seed and --seeds: give one of them")
            seeds = parse_seeds(args.seeds)
        fresh.check_data(settings, engine.clients)
    except REFUSALS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("results/runs") / time.strftime("%Y%m%d-%H%M%S")
    note = unread_note(settings)  # said once every check has passed: a refusal says only why
    try:
        if seeds is not None:  # the group directory: its config.json, then one run per seed
            lock, _ = fresh.start(settings, engine, out, args.overwrite, extra={"seeds": seeds})
            shutil.rmtree(out / "checkpoint", ignore_errors=True)  # the seeds keep their own
            _say(note)
            return run_seeds(settings, seeds, out, engine, quiet=args.quiet)
        lock, settings = fresh.start(settings, engine, out, args.overwrite)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _say(note)
    return fresh.execute(settings, engine, out, False, args.quiet)


def resume_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--resume DIR``: a seed group seed by seed, or one run from its checkpoint, each with
    the settings of its config.json. The directory is held before it is read back (another
    run, a second ``--resume``, may be writing there) and until the run ends."""
    out = args.resume
    try:
        group = group_of(out)
        if group is not None:  # a --seeds group: resume seed by seed
            if args.seeds is not None or args.out is not None:
                raise SettingsError("--resume takes its settings from the run's "
                                    "config.json; drop the other options")  # fmt: skip
            lock = lock_out(out)  # noqa: F841 - held until we exit
            return run_seeds(None, group, out, quiet=args.quiet)
        if not out.is_dir():
            raise SettingsError(f"--resume {out}: no such directory")
        lock = lock_out(out)  # noqa: F841 - held until we exit
        given = flags_given(parser, args, ignore=("resume", "quiet"))
        if given:  # a resumed run is the same run
            raise SettingsError(f"--resume takes its settings from the run's config.json; "
                                f"drop {', '.join(given)}")  # fmt: skip
        settings, engine = resumed(out)
        fresh.check_data(settings, engine.clients)
    except REFUSALS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return fresh.execute(settings, engine, out, True, args.quiet)


def _say(note: str | None) -> None:
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
