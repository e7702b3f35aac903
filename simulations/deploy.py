"""``python -m simulations.deploy``: the same experiment on Flower's Deployment Engine, on loopback.

Where ``simulations.run`` drives the Simulation Engine in one process, this starts real
Flower processes on 127.0.0.1, exactly as one would across machines:

1. ``flower-superlink --host 127.0.0.1 --port P --database state.db`` (Fleet, Control and
   ServerAppIo APIs on one port; its state in a database file), in its own directory: the
   ServerApp runs with the SuperLink's working directory as its cwd;
2. ``--nodes`` x ``flower-supernode --superlink 127.0.0.1:Q --node-config "partition-id=i
   num-partitions=N" --host 127.0.0.1 --port R_i``, each in its own directory (its disk),
   reaching the SuperLink through a byte-counting proxy on port Q;
3. a throw-away ``$FLWR_HOME/config.toml`` naming the federation ``deploy``, then ``flwr run
   . deploy --stream --run-config "..."`` with every setting (``min-nodes`` = the node count,
   so the server waits for all of them);
4. the ServerApp writes ``rounds.csv``, ``summary.json`` and the figure straight into
   ``--out`` (``PEMN_FL_RUN_DIR``), beside a ``config.json`` and every process's log
   (``logs/``);
5. every process it started is stopped by its PID (its process group, and the processes
   Flower started under it), also after an error or Ctrl-C.

``--secure`` adds TLS and SuperNode authentication (``simulations.secure`` makes a throw-away
CA, the SuperLink's certificate and one key pair per node; each node's public key is
registered with ``flwr supernode register``). ``--kill-superlink-after R`` crashes the
SuperLink, its ServerApp and SuperNode 0 after R rounds, restarts them and resumes;
``--resume DIR`` continues a deployment whose deploy command itself was stopped. The state a
resume needs (database, checkpoints, credentials) lives in ``--out``/state/ until the run
finishes. Options are otherwise those of ``simulations.run`` (``--clients`` is replaced by
``--nodes``); the plain Flower commands are in docs/deployment.md.

This module is the command (its flags, its checks, a fresh or resumed plan); a deployment's
processes from start to stop are ``simulations.deployment``, the processes themselves
``simulations.processes``, and each node's emulated link ``simulations.shaping``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

from pemn_fl.checkpoint import CheckpointError
from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.data import DataError
from pemn_fl.methods import settings_from
from pemn_fl.models import ModelError
from pemn_fl.partition import PartitionError
from simulations.deployment import CHECKPOINT_DIR, Deployment, Layout, Plan
from simulations.fresh import check_data
from simulations.outdir import prepare_out, versions
from simulations.processes import HOST, still_running
from simulations.run import build_parser as run_parser
from simulations.run import flags_given, settings_from_args, unread_note


def deploy(settings: RunSettings, nodes: int, out: Path, timeout: float,
           kill_after: int | None = None, *, secure: bool = False,
           unauthorized_nodes: int = 0, nodes_without_ca: int = 0,
           kill_superlink_after: int | None = None, resume: bool = False,
           keep_state: bool = False) -> Path:  # fmt: skip
    """Run ``settings`` on a loopback SuperLink with ``nodes`` SuperNodes; results into ``out``.

    ``kill_after``: SIGKILL SuperNode 0 once that many training rounds are logged (a node
    crash; the run goes on with the others). ``kill_superlink_after``: SIGKILL the SuperLink
    (with its ServerApp) and SuperNode 0 then, restart both and resume. ``resume``: continue
    the deployment whose state is in ``out/state``. ``secure``: TLS and SuperNode
    authentication, with ``unauthorized_nodes`` and ``nodes_without_ca`` intruders that
    must be refused. ``out/state`` is removed once the run has finished (``keep_state``
    keeps it).
    """
    settings = dataclasses.replace(settings, checkpoint_dir=CHECKPOINT_DIR)
    plan = Plan(settings, nodes, secure, unauthorized_nodes, nodes_without_ca)
    layout = Layout(out)
    Deployment(plan, layout, timeout).run(resume, kill_after, kill_superlink_after)
    if not keep_state:
        shutil.rmtree(layout.state, ignore_errors=True)
    return out


def resumed_plan(args: argparse.Namespace,
                 parser: argparse.ArgumentParser) -> tuple[Plan, Path]:  # fmt: skip
    """``--resume DIR``: the plan from DIR/config.json; any other setting is an error."""
    given = flags_given(parser, args, ignore=("resume", "quiet", "timeout", "keep_state",
                                              "clients"))  # fmt: skip
    if given:
        raise SettingsError(f"--resume takes its settings from the deployment's config.json; "
                            f"drop {', '.join(given)}")  # fmt: skip
    out: Path = args.resume
    try:
        config = json.loads((out / "config.json").read_text())
        if config.get("engine") != "deployment":
            raise ValueError("not a deployment")
        plan = Plan(settings_from(config["settings"]), int(config["nodes"]),
                    bool(config.get("secure", False)),
                    int(config.get("unauthorized_nodes", 0)),
                    int(config.get("nodes_without_ca", 0)))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"--resume {out}: no readable config.json of a simulations.deploy "
                            f"run there ({type(exc).__name__}: {exc})") from None  # fmt: skip
    if running := still_running(Layout(out).pids):
        raise SettingsError(f"--resume {out}: processes of the earlier deploy command still run "
                            f"(PIDs {', '.join(map(str, running))}); stop them first, e.g. "
                            f"kill -- -{running[0]}")  # fmt: skip
    if not (Layout(out).server_checkpoint / "server.pkl").is_file():
        raise SettingsError(f"--resume {out}: no server checkpoint in {Layout(out).state} (the "
                            "run finished, or stopped before its first round ended)")  # fmt: skip
    check_resumable(plan, Layout(out))
    return plan, out


def check_resumable(plan: Plan, layout: Layout) -> None:
    """What the resumed ServerApp and SuperNodes will read back, checked here, before any
    process starts (as ``simulations.run --resume`` does): the server checkpoint, the
    finished rows, and each node's saved state (node i serves partition i and keeps its
    state in its own directory), so that damage is one ``error:`` line, not a failure deep
    in a process log or a node silently training from older state."""
    from pemn_fl import checkpoint as C
    from pemn_fl.report import columns_for
    from pemn_fl.server_app import CLIENTS_FILE
    from simulations.resume import load_server_of_run, method_names_of

    settings = plan.settings
    saved = load_server_of_run(layout.server_checkpoint, layout.out / "config.json")
    C.finished_rows(layout.out / "rounds.csv", settings.method_list, saved,
                    settings.num_server_rounds, columns_for(bool(settings.link)))  # fmt: skip
    for index in range(plan.nodes):
        node = layout.node_dir(index) / CHECKPOINT_DIR
        C.check_clients(node)
        C.check_client_states(node, saved, method_names_of(settings), settings,
                              layout.out / CLIENTS_FILE, partitions=[index])  # fmt: skip


# Flags deploy inherits from simulations.run's parser but cannot use: what each would have
# meant there, and what to do instead. A deployment has no Ray and no seed groups.
RUN_ONLY = {
    "ray_address": ("--ray-address", "a deployment runs Flower's SuperLink and SuperNodes, not "
                    "Ray clients; drop it (it is simulations.run's)"),
    "cpus_per_client": ("--cpus-per-client", "Ray's share of a CPU per simulated client; each "
                        "SuperNode is a process of its own: drop it"),
    "gpus_per_client": ("--gpus-per-client", "Ray's share of a GPU per simulated client; each "
                        "SuperNode uses --device: drop it"),
    "seeds": ("--seeds", "a deployment runs one seed: give --seed, one deployment per seed"),
    "clients": ("--clients", "a deployment's clients are its SuperNodes: give --nodes"),
}  # fmt: skip


def check_run_only(args: argparse.Namespace, defaults: dict[str, object]) -> None:
    """Refuse the flags of ``RUN_ONLY`` given a value (they used to be dropped silently)."""
    given = [(flag, why) for key, (flag, why) in RUN_ONLY.items()
             if getattr(args, key) != defaults.get(key)]  # fmt: skip
    if given:
        raise SettingsError("; ".join(f"{flag}: {why}" for flag, why in given))


def check_timeout(timeout: float) -> None:
    """``--timeout`` bounds the whole deployment: a positive, finite number of seconds,
    checked before any process starts (``nan`` never expired, ``0`` and ``-1`` started every
    process and then failed)."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise SettingsError(f"--timeout {timeout:g}: the deployment's time limit must be a "
                            "positive number of seconds (default 1800)")  # fmt: skip


def check_options(args: argparse.Namespace) -> None:
    """Bad combinations, each one ``error:`` line (before anything starts)."""
    if args.nodes < 1:
        raise SettingsError(f"--nodes {args.nodes}: need at least 1 node")
    if (args.unauthorized_nodes or args.nodes_without_ca) and not args.secure:
        raise SettingsError("--unauthorized-nodes and --nodes-without-ca test the SuperLink's "
                            "authentication and TLS: they need --secure")  # fmt: skip
    if min(args.unauthorized_nodes, args.nodes_without_ca) < 0:
        raise SettingsError("--unauthorized-nodes and --nodes-without-ca count nodes: >= 0")
    if args.kill_node_after is not None and args.kill_node_after < 1:
        raise SettingsError(f"--kill-node-after {args.kill_node_after}: a number of training "
                            "rounds, >= 1")  # fmt: skip
    if args.kill_superlink_after is not None and args.kill_node_after is not None:
        raise SettingsError("--kill-superlink-after already kills SuperNode 0 with the "
                            "SuperLink; drop --kill-node-after")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """``simulations.run``'s command line (every setting and method option) with the
    deployment's own flags; the run's flags a deployment refuses say so in their help."""
    parser = run_parser()
    parser.prog = "python -m simulations.deploy"
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--nodes", type=int, default=3, help="SuperNodes (= clients) to start")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the run")
    parser.add_argument("--kill-node-after", type=int, default=None, metavar="ROUNDS",
                        help="fault injection: SIGKILL SuperNode 0 once ROUNDS training rounds "
                        "are logged; the run goes on with the others")  # fmt: skip
    parser.add_argument("--kill-superlink-after", type=int, default=None, metavar="ROUNDS",
                        help="fault injection: SIGKILL the SuperLink (with its ServerApp) and "
                        "SuperNode 0 once ROUNDS training rounds are logged, restart them on "
                        "the same database and disks, and resume from the checkpoint")  # fmt: skip
    parser.add_argument("--secure", action="store_true",
                        help="TLS (a throw-away CA and server certificate) and SuperNode "
                        "authentication (one registered key pair per node)")  # fmt: skip
    parser.add_argument("--unauthorized-nodes", type=int, default=0, metavar="K",
                        help="--secure: also start K SuperNodes whose key is not registered "
                        "(they must be refused)")  # fmt: skip
    parser.add_argument("--nodes-without-ca", type=int, default=0, metavar="K",
                        help="--secure: also start K SuperNodes that do not trust the CA "
                        "(their TLS handshake must fail)")  # fmt: skip
    parser.add_argument("--keep-state", action="store_true",
                        help="keep OUT/state (database, checkpoints, credentials) after the "
                        "run finishes")  # fmt: skip
    for action in parser._actions:
        if action.dest in RUN_ONLY:
            action.help = f"not for a deployment: {RUN_ONLY[action.dest][1]}"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_run_only(args, vars(parser.parse_args([])))
        check_timeout(args.timeout)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.clients = args.nodes
    resume = args.resume is not None
    try:
        plan, out = resumed_plan(args, parser) if resume else fresh_plan(args)
        check_data(plan.settings, plan.nodes)
        if not resume:
            prepare_out(out, args.overwrite)
            shutil.rmtree(Layout(out).state, ignore_errors=True)  # never a stale one
    except (SettingsError, DataError, PartitionError, ModelError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not resume:
        if note := unread_note(plan.settings):  # simulations.run's rule
            print(note, file=sys.stderr)
        write_config(plan, out)
    return run_deployment(plan, out, args, resume)


def fresh_plan(args: argparse.Namespace) -> tuple[Plan, Path]:
    """A new deployment's plan and results directory from the command line."""
    check_options(args)
    settings = settings_from_args(args)
    if settings.data_dir and not Path(settings.data_dir).is_absolute():
        # Every process runs in a directory of its own: give them all the same path.
        settings = dataclasses.replace(settings, data_dir=str(Path(settings.data_dir).resolve()))
    plan = Plan(settings, args.nodes, args.secure, args.unauthorized_nodes,
                args.nodes_without_ca)  # fmt: skip
    if args.kill_superlink_after is not None:
        total = settings.num_server_rounds * len(settings.method_list)
        if not 1 <= args.kill_superlink_after < total:
            raise SettingsError(f"--kill-superlink-after {args.kill_superlink_after}: between "
                                f"1 and {total - 1} (the run has {total} training "
                                "rounds)")  # fmt: skip
    return plan, args.out or Path("results/runs") / time.strftime("deploy-%Y%m%d-%H%M%S")


def write_config(plan: Plan, out: Path) -> None:
    """config.json, written first, so even a deployment that is killed says what it was."""
    settings = dataclasses.replace(plan.settings, checkpoint_dir=CHECKPOINT_DIR)
    config = {"nodes": plan.nodes, "secure": plan.secure,
              "unauthorized_nodes": plan.unauthorized_nodes,
              "nodes_without_ca": plan.nodes_without_ca,
              "command": " ".join(sys.argv), "engine": "deployment",
              "settings": settings.to_run_config(), "versions": versions()}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def run_deployment(plan: Plan, out: Path, args: argparse.Namespace, resume: bool) -> int:
    """Deploy ``plan`` into ``out`` and say how it ended: 0, 1 (it failed) or 130 (stopped;
    every process it started is stopped too, and ``--resume`` goes on)."""
    settings = plan.settings
    print(f"pemn-fl deploy: SuperLink + {plan.nodes} SuperNodes on {HOST}"
          f"{' (TLS, node authentication)' if plan.secure else ''}, "
          f"{settings.num_server_rounds} rounds, methods {settings.methods} -> {out}"
          + (" (resumed)" if resume else ""), flush=True)  # fmt: skip
    started = time.monotonic()
    # ``kill PID`` (SIGTERM) stops the deployment as Ctrl-C does, and so does SIGINT when a
    # shell started this command in the background with SIGINT ignored: either way every
    # process is stopped and ``--resume`` can go on from the checkpoint.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        deploy(settings, plan.nodes, out, args.timeout, args.kill_node_after,
               secure=plan.secure, unauthorized_nodes=plan.unauthorized_nodes,
               nodes_without_ca=plan.nodes_without_ca,
               kill_superlink_after=args.kill_superlink_after, resume=resume,
               keep_state=args.keep_state)  # fmt: skip
    except (RuntimeError, SettingsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; every process started was stopped (go on with: python -m "
              f"simulations.deploy --resume {out})", file=sys.stderr)  # fmt: skip
        return 130
    print(f"done in {time.monotonic() - started:.1f} s; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
