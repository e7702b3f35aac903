"""``python -m simulations.deploy``: the same experiment on Flower's Deployment Engine, on loopback.

Where ``simulations.run`` drives the Simulation Engine in one process, this starts real
Flower processes on 127.0.0.1, exactly as one would across machines:

1. ``flower-superlink --insecure --host 127.0.0.1 --port P`` (Fleet, Control and
   ServerAppIo APIs on one port), in a scratch directory: the ServerApp runs with the
   SuperLink's working directory as its cwd and writes ``results/runs/flwr-*/`` there;
2. ``--nodes`` x ``flower-supernode --insecure --superlink 127.0.0.1:P --node-config
   "partition-id=i num-partitions=N" --host 127.0.0.1 --port Q_i`` (each its own port);
3. a throw-away ``$FLWR_HOME/config.toml`` naming the federation ``deploy`` (address
   ``127.0.0.1:P``, insecure), then ``flwr run . deploy --stream --run-config "..."`` with
   every setting (``min-nodes`` = the node count, so the server waits for all of them);
4. the run's ``rounds.csv``, ``summary.json`` and figure are moved into ``--out`` with a
   ``config.json`` and the processes' logs (``logs/``);
5. every process it started is stopped by its PID (SIGTERM, then SIGKILL), also after an
   error or Ctrl-C.

Options are those of ``simulations.run`` (``--clients`` is replaced by ``--nodes``); plain
Flower commands for the same steps are in the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.data import DataError
from pemn_fl.models import ModelError
from pemn_fl.partition import PartitionError
from pemn_fl.wireproxy import WireProxy
from simulations.run import build_parser, check_data, prepare_out, settings_from_args, versions

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: the processes never listen beyond this machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def toml_value(value: object) -> str:
    """A run-config value as TOML (strings quoted, so a comma list stays one value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config(settings: RunSettings) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in settings.to_run_config().items())


def _executable(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}")  # fmt: skip
    if found is None:
        raise SettingsError(f"{name} not found: install Flower (pip install -e .) in this "
                            "environment")  # fmt: skip
    return found


class Processes:
    """The processes this command started, stopped by PID however the command ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, **kwargs: object) -> subprocess.Popen:
        # Its own process group (id = its PID): the SuperLink and SuperNodes start helper
        # processes (flower-superexec, the app processes) that must stop with them.
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]  # fmt: skip
        self.started.append(proc)
        return proc

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group this command created, by its PID

    def kill_node(self, proc: subprocess.Popen) -> None:
        self._signal(proc, signal.SIGKILL)

    def stop(self) -> None:
        for proc in reversed(self.started):
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            self._signal(proc, signal.SIGKILL)  # helpers that outlived their parent
            proc.wait()


def _rounds_done(link_dir: Path) -> int:
    """Rounds the ServerApp has logged so far (its rounds.csv grows a line per round)."""
    runs = sorted((link_dir / "results" / "runs").glob("flwr-*"))
    if not runs or not (runs[-1] / "rounds.csv").exists():
        return 0
    lines = (runs[-1] / "rounds.csv").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split(",")[1:2] != ["0"])  # round 0 = initial eval


def deploy(settings: RunSettings, nodes: int, out: Path, timeout: float,
           kill_after: int | None = None) -> Path:  # fmt: skip
    """Run ``settings`` on a loopback SuperLink with ``nodes`` SuperNodes; results into ``out``.

    ``kill_after``: SIGKILL SuperNode 0 once that many training rounds are logged (a node
    crash, for the fault tests); the run must go on with the others.
    """
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="pemn-fl-deploy-") as scratch:
        home, link_dir = Path(scratch) / "flwr-home", Path(scratch) / "superlink"
        home.mkdir()
        link_dir.mkdir()
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
               # The SuperLink and SuperNodes start flower-superexec by name: find it in this
               # interpreter's environment even when that environment is not activated.
               "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                        os.environ.get("PATH", "")])}  # fmt: skip
        port = free_port()
        # The SuperNodes reach the SuperLink through the byte-counting proxy; the ServerApp
        # (a child of the SuperLink, same environment) reads its meter at every round's end.
        meter = (out / "wire-meter.json").resolve()  # the ServerApp runs in another cwd
        proxy = WireProxy(port, meter).start()
        env["PEMN_FL_WIRE_METER"] = str(meter)
        try:
            procs.start([_executable("flower-superlink"), "--insecure", "--host", HOST,
                         "--port", str(port)], logs / "superlink.log", cwd=link_dir,
                        env=env)  # fmt: skip
            nodes_started = []
            for pid in range(nodes):
                cmd = [_executable("flower-supernode"), "--insecure", "--superlink",
                       f"{HOST}:{proxy.listen_port}", "--node-config",
                       f"partition-id={pid} num-partitions={nodes}", "--host", HOST,
                       "--port", str(free_port())]  # fmt: skip
                nodes_started.append(procs.start(cmd, logs / f"supernode-{pid}.log",
                                                 cwd=link_dir, env=env))  # fmt: skip
            (home / "config.toml").write_text(
                '[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                f'address = "{HOST}:{port}"\ninsecure = true\n'
            )
            flwr = procs.start(
                [_executable("flwr"), "run", str(ROOT), "deploy", "--stream",
                 "--run-config", run_config(settings)],
                logs / "flwr-run.log", cwd=ROOT, env=env,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while flwr.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the run took over {timeout:g} s; logs in {logs}")
                if kill_after is not None and _rounds_done(link_dir) >= kill_after:
                    # Fault injection: SuperNode 0 dies without a goodbye (SIGKILL).
                    procs.kill_node(nodes_started[0])
                    kill_after = None
                time.sleep(0.5)
            runs = sorted((link_dir / "results" / "runs").glob("flwr-*"))
            if flwr.returncode or not runs or not (runs[-1] / "rounds.csv").exists():
                tail = (logs / "flwr-run.log").read_text()[-2000:]
                raise RuntimeError(f"the deployment run failed (flwr run exit {flwr.returncode})"
                                   f"; logs in {logs}\n{tail}")  # fmt: skip
            for item in runs[-1].iterdir():
                shutil.move(str(item), out / item.name)
        finally:
            procs.stop()
            proxy.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m simulations.deploy"
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--nodes", type=int, default=3, help="SuperNodes (= clients) to start")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the run")
    parser.add_argument("--kill-node-after", type=int, default=None, metavar="ROUNDS",
                        help="fault injection: SIGKILL SuperNode 0 once ROUNDS training rounds "
                        "are logged; the run goes on with the others")  # fmt: skip
    args = parser.parse_args(argv)
    args.clients = args.nodes
    try:
        if args.nodes < 1:
            raise SettingsError(f"--nodes {args.nodes}: need at least 1 node")
        if args.resume is not None:
            raise SettingsError("--resume is for simulations.run (the simulator); a deployment "
                                "cannot be resumed yet")  # fmt: skip
        settings = settings_from_args(args)
        check_data(settings, args.nodes)
        out = args.out or Path("results/runs") / time.strftime("deploy-%Y%m%d-%H%M%S")
        prepare_out(out, args.overwrite)
    except (SettingsError, DataError, PartitionError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = {"nodes": args.nodes, "command": " ".join(sys.argv), "engine": "deployment",
              "settings": settings.to_run_config(), "versions": versions()}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"pemn-fl deploy: SuperLink + {args.nodes} SuperNodes on {HOST}, "
          f"{settings.num_server_rounds} rounds, methods {settings.methods} -> {out}")  # fmt: skip
    started = time.monotonic()
    try:
        deploy(settings, args.nodes, out, args.timeout, args.kill_node_after)
    except (RuntimeError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    print(f"done in {time.monotonic() - started:.1f} s; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
