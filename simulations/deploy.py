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
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pemn_fl.checkpoint import CheckpointError
from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.data import DataError
from pemn_fl.methods import settings_from
from pemn_fl.models import ModelError
from pemn_fl.options import toml_value
from pemn_fl.partition import PartitionError
from simulations import secure as S
from simulations.run import build_parser as run_parser
from simulations.run import (
    check_data,
    flags_given,
    prepare_out,
    settings_from_args,
    unread_note,
    versions,
)
from simulations.shaping import NodeLink
from simulations.wireproxy import WireProxy

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only: the processes never listen beyond this machine
FEDERATION = "deploy"
# Each process resolves this against its own working directory: the SuperLink's (where the
# ServerApp runs) holds the server checkpoint, each SuperNode's its own client checkpoint.
CHECKPOINT_DIR = "checkpoint"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def run_config(settings: RunSettings) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in settings.to_run_config().items())


def _executable(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                   f"{os.environ.get('PATH', '')}")  # fmt: skip
    if found is None:
        raise SettingsError(f"{name} not found: install Flower (pip install -e .) in this "
                            "environment")  # fmt: skip
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc; empty where there is none.

    Flower starts helpers in sessions of their own (the SuperLink's ``flower-superexec``,
    and under it ``flwr-serverapp``), out of reach of a signal to the SuperLink's process
    group; they watch their parent's PID and exit some time after it, but a ServerApp
    retrying its last status push can outlive a killed SuperLink by minutes. So the tree
    is collected, by PID, before anything in it is signalled.
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def still_running(pid_file: Path) -> list[int]:
    """PIDs from ``pid_file`` that still run the command recorded for them (a deploy
    command killed with SIGKILL leaves its Flower processes running on the database)."""
    try:
        recorded = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return []
    return [int(r["pid"]) for r in recorded if r.get("cmd") and r["cmd"] in _cmdline(int(r["pid"]))]


class Processes:
    """The processes this command started, stopped by PID however the command ends.

    With ``pid_file``, their PIDs and commands are written there as they start, so that a
    later ``--resume`` can tell whether any of them outlived this command.
    """

    def __init__(self, pid_file: Path | None = None) -> None:
        self.started: list[subprocess.Popen] = []
        self.pid_file = pid_file

    def start(self, cmd: list[str], log: Path, **kwargs: object) -> subprocess.Popen:
        # Its own process group (id = its PID), so that it and what it starts in that group
        # stop together; helpers in other sessions are found by ``descendants``.
        proc = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)  # type: ignore[call-overload]  # fmt: skip
        self.started.append(proc)
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.pid_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(
                [{"pid": p.pid, "cmd": " ".join(map(str, p.args[:2]))} for p in self.started]))
            os.replace(tmp, self.pid_file)  # a reader never sees a half-written list
        return proc

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: signal.Signals, tree: list[int]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group this command created, by its PID
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL ``proc`` and everything under it at once (a machine that dies)."""
        self._signal(proc, signal.SIGKILL, descendants(proc.pid))
        proc.wait()
        self.forget(proc)

    def forget(self, proc: subprocess.Popen) -> None:
        """Drop a process that has exited and been reaped: its PID may be reused by then,
        so it is never signalled again (its helpers, if any, were signalled with it)."""
        with contextlib.suppress(ValueError):
            self.started.remove(proc)

    def stop(self) -> None:
        trees = {proc.pid: descendants(proc.pid) for proc in self.started}
        for proc in reversed(self.started):
            self._signal(proc, signal.SIGTERM, trees[proc.pid])
        deadline = time.monotonic() + 10
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.started:
            self._signal(proc, signal.SIGKILL, trees[proc.pid])  # whatever outlived TERM
            proc.wait()


@dataclass(frozen=True)
class Layout:
    """Where a deployment keeps its files: results in ``out``, resumable state below it."""

    out: Path

    @property
    def state(self) -> Path:  # what a resume needs; removed once the run has finished
        return self.out / "state"

    @property
    def link_dir(self) -> Path:  # the SuperLink's (and the ServerApp's) working directory
        return self.state / "superlink"

    @property
    def database(self) -> Path:
        return self.link_dir / "state.db"

    @property
    def server_checkpoint(self) -> Path:
        return self.link_dir / CHECKPOINT_DIR

    def node_dir(self, index: int) -> Path:  # a SuperNode's working directory: its disk
        return self.state / "nodes" / f"node-{index}"

    @property
    def secure(self) -> Path:
        return self.state / "secure"

    @property
    def pids(self) -> Path:  # the processes of the deploy command that owns this state
        return self.state / "pids.json"

    @property
    def home(self) -> Path:  # FLWR_HOME of every process: config.toml, installed app bundles
        return self.state / "flwr-home"

    @property
    def logs(self) -> Path:
        return self.out / "logs"


@dataclass(frozen=True)
class Plan:
    """What to deploy: the settings and the processes around them."""

    settings: RunSettings
    nodes: int
    secure: bool = False
    unauthorized_nodes: int = 0  # --secure: SuperNodes whose key was never registered
    nodes_without_ca: int = 0  # --secure: SuperNodes that do not trust the run's CA

    def key_names(self) -> list[str]:
        return ([f"node-{i}" for i in range(self.nodes)]
                + [f"unauthorized-{j}" for j in range(self.unauthorized_nodes)])  # fmt: skip


class Deployment:
    """One deployment's processes, proxy and files; ``run`` drives it to the end."""

    def __init__(self, plan: Plan, layout: Layout, timeout: float) -> None:
        self.plan, self.layout, self.timeout = plan, layout, timeout
        self.procs = Processes(layout.pids)
        self.port = free_port()
        self.level = "tls" if plan.secure else "http"
        self.meter = (layout.out / "wire-meter.json").resolve()  # the ServerApp's cwd differs
        self.proxy = WireProxy(self.port, self.meter, level=self.level,
                               links=shaped_links(plan.settings, plan.nodes),
                               calls_path=layout.out / "wire-calls.jsonl")  # fmt: skip
        self.creds: S.Credentials | None = None
        self.superlink: subprocess.Popen | None = None
        self.node_procs: list[subprocess.Popen] = []
        self.timeline: dict[tuple[str, int], dict[str, object]] = {}
        self.started = time.monotonic()
        self.env = {**os.environ, "FLWR_HOME": str(layout.home.resolve()),
                    "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    # The SuperLink and SuperNodes start flower-superexec by name: find it in
                    # this interpreter's environment even when it is not activated.
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                             os.environ.get("PATH", "")]),
                    "PEMN_FL_RUN_DIR": str(layout.out.resolve())}  # fmt: skip
        self.env.pop("PEMN_FL_RESUME", None)
        if self.level == "http":
            # The ServerApp (a child of the SuperLink, same environment) reads the meter at
            # every round's end. Under TLS the proxy cannot see rounds: the rows' wire
            # columns are then the transport model's, and the TLS totals are reported apart.
            self.env["PEMN_FL_WIRE_METER"] = str(self.meter)
        else:
            self.env.pop("PEMN_FL_WIRE_METER", None)

    # -- files -----------------------------------------------------------------------
    def prepare(self, resume: bool) -> None:
        for path in (self.layout.logs, self.layout.link_dir, self.layout.home,
                     *(self.layout.node_dir(i) for i in range(self.plan.nodes))):  # fmt: skip
            path.mkdir(parents=True, exist_ok=True)
        if not self.plan.secure:
            return
        names = self.plan.key_names()
        if resume:  # the SuperLink's database holds the registered keys: keep the same ones
            self.creds = S.load_credentials(self.layout.secure, names)
        else:
            self.creds = S.make_credentials(self.layout.secure, len(names), names)

    def write_federation(self) -> None:
        """The CLI's federation ``deploy`` (TLS: trust the run's CA, by path)."""
        tls = (f'root-certificates = "{self.creds.ca_cert.resolve()}"\n' if self.creds
               else "insecure = true\n")  # fmt: skip
        (self.layout.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "{HOST}:{self.port}"\n{tls}'
        )

    # -- processes -------------------------------------------------------------------
    def start_superlink(self, resume: bool) -> None:
        cmd = [_executable("flower-superlink"), "--host", HOST, "--port", str(self.port),
               "--database", str(self.layout.database.resolve())]  # fmt: skip
        if self.creds is not None:
            cmd += ["--ssl-ca-certfile", str(self.creds.ca_cert.resolve()),
                    "--ssl-certfile", str(self.creds.server_cert.resolve()),
                    "--ssl-keyfile", str(self.creds.server_key.resolve()),
                    "--enable-supernode-auth"]  # fmt: skip
        else:
            cmd.append("--insecure")
        env = dict(self.env)
        if resume:
            env["PEMN_FL_RESUME"] = "1"  # the next ServerApp continues from its checkpoint
        self.superlink = self.procs.start(cmd, self.layout.logs / "superlink.log",
                                          cwd=self.layout.link_dir, env=env)  # fmt: skip
        self._wait_listening()

    def _wait_listening(self, patience: float = 120.0) -> None:
        """Until the SuperLink accepts connections (uvicorn binds once it is ready)."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise RuntimeError("the SuperLink exited at start (exit "
                                   f"{self.superlink.returncode}):\n"
                                   + self._tail("superlink.log"))  # fmt: skip
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the SuperLink did not listen within {patience:g} s:\n"
                           + self._tail("superlink.log"))  # fmt: skip

    def flwr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([_executable("flwr"), *args], cwd=self.layout.link_dir,
                              env=self.env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        with (self.layout.logs / "flwr-cli.log").open("a") as log:
            log.write(f"$ flwr {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
        if check and proc.returncode:
            raise RuntimeError(f"flwr {' '.join(args)} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")  # fmt: skip
        return proc

    def register_nodes(self) -> None:
        """Put each authorized node's public key on the SuperLink's list (its database)."""
        assert self.creds is not None
        for key in self.creds.node_keys[: self.plan.nodes]:
            self.flwr("supernode", "register", str(S.Credentials.public_key(key).resolve()),
                      FEDERATION)  # fmt: skip

    def _node_cmd(self, partition: int, partitions: int, key: Path | None,
                  trust_ca: bool) -> list[str]:  # fmt: skip
        cmd = [_executable("flower-supernode"), "--superlink",
               f"{HOST}:{self.proxy.port_for(partition)}",
               "--node-config", f"partition-id={partition} num-partitions={partitions}",
               "--host", HOST, "--port", str(free_port())]  # fmt: skip
        if not self.plan.secure:
            return cmd + ["--insecure"]
        if trust_ca:
            assert self.creds is not None
            cmd += ["--root-certificates", str(self.creds.ca_cert.resolve())]
        # else: TLS against the system's trust store, which has never heard of this CA
        if key is not None:
            cmd += ["--auth-supernode-private-key", str(key.resolve())]
        return cmd

    def start_node(self, index: int) -> subprocess.Popen:
        key = self.creds.node_keys[index] if self.creds else None
        proc = self.procs.start(self._node_cmd(index, self.plan.nodes, key, trust_ca=True),
                                self.layout.logs / f"supernode-{index}.log",
                                cwd=self.layout.node_dir(index), env=self.env)  # fmt: skip
        if index < len(self.node_procs):
            self.node_procs[index] = proc
        else:
            self.node_procs.append(proc)
        return proc

    def _activations(self, index: int) -> int:
        """How often SuperNode ``index`` has been activated (its log says so each time)."""
        log = self.layout.logs / f"supernode-{index}.log"
        return log.read_text(errors="replace").count("SuperNode ID:") if log.is_file() else 0

    def restart_nodes(self, indices: list[int], patience: float = 300.0) -> dict[int, int]:
        """Start the SuperNodes ``indices`` (again) and wait until the SuperLink has taken
        each; returns the number of starts each needed.

        Flower 1.42 activates a node only if its id is newly registered or offline. A node
        that comes back with its registered key (``--secure``) before the SuperLink has
        noticed that it died (2 x its 30 s heartbeat interval) is refused ("Failed to
        activate SuperNode") and exits; it is started again until it is taken. The run is
        submitted only then: a handshake sent while a node is down would leave its
        partition out of the whole resumed run.
        """
        before = {i: self._activations(i) for i in indices}
        starts = dict.fromkeys(indices, 1)
        for i in indices:
            self.start_node(i)
        deadline = time.monotonic() + patience
        waiting = set(indices)
        while waiting:
            for i in sorted(waiting):
                if self._activations(i) > before[i]:
                    waiting.discard(i)
                elif self.node_procs[i].poll() is not None:  # refused: try again shortly
                    self.procs.forget(self.node_procs[i])
                    time.sleep(2)
                    self.start_node(i)
                    starts[i] += 1
            if waiting and time.monotonic() > deadline:
                tail = self._tail(f"supernode-{min(waiting)}.log")
                raise RuntimeError(f"SuperNodes {sorted(waiting)} were not taken back within "
                                   f"{patience:g} s:\n{tail}")  # fmt: skip
            time.sleep(0.5)
        return starts

    def start_intruders(self) -> None:
        """SuperNodes that must be refused (``--secure`` only), each serving a partition of
        its own: had one been let in, the handshake would map it and it would be sampled."""
        total = self.plan.nodes + self.plan.unauthorized_nodes + self.plan.nodes_without_ca
        intruders: list[tuple[str, Path | None, bool]] = []  # (name, key, trusts the CA)
        for j in range(self.plan.unauthorized_nodes):
            assert self.creds is not None  # generated, never registered:
            intruders.append((f"unauthorized-{j}", self.creds.node_keys[self.plan.nodes + j], True))
        intruders += [(f"without-ca-{j}", None, False) for j in range(self.plan.nodes_without_ca)]
        for partition, (name, key, trust_ca) in enumerate(intruders, start=self.plan.nodes):
            directory = self.layout.state / "nodes" / name
            directory.mkdir(parents=True, exist_ok=True)
            self.procs.start(self._node_cmd(partition, total, key, trust_ca=trust_ca),
                             self.layout.logs / f"{name}.log", cwd=directory,
                             env=self.env)  # fmt: skip

    def submit(self, log_name: str) -> subprocess.Popen:
        return self.procs.start(
            [_executable("flwr"), "run", str(ROOT), FEDERATION, "--stream",
             "--run-config", run_config(self.plan.settings)],
            self.layout.logs / log_name, cwd=ROOT, env=self.env,
        )  # fmt: skip

    def stop_stale_runs(self) -> list[str]:
        """Stop the runs the restarted SuperLink still lists as unfinished (the cut run:
        its ServerApp is gone, but for up to a minute its undelivered instructions would
        still be handed to nodes); returns their ids."""
        listed = self.flwr("ls", FEDERATION, "--format", "json", check=False)
        try:
            data = json.loads(listed.stdout[listed.stdout.index("{"):])
        except ValueError:
            return []
        stale = [str(run["run-id"]) for run in data.get("runs", [])
                 if run.get("status", "").split(":")[0] in ("pending", "starting", "running")]
        for run_id in stale:
            self.flwr("stop", run_id, FEDERATION, check=False)
        return stale

    # -- the run ---------------------------------------------------------------------
    def _tail(self, log_name: str, chars: int = 2000) -> str:
        path = self.layout.logs / log_name
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def rows(self) -> list[tuple[str, int]]:
        """(method, round) of each complete row the ServerApp has written so far."""
        path = self.layout.out / "rounds.csv"
        try:
            text = path.read_text()
        except OSError:
            return []
        lines = text.splitlines(keepends=True)
        complete = [line for line in lines[1:] if line.endswith("\n")]
        return [(r[0], int(r[1])) for r in csv.reader(complete) if len(r) > 1]

    def note_rows(self, rows: list[tuple[str, int]]) -> None:
        """The proxy's per-direction totals when each row first appeared (``wire-timeline``):
        at either level, the bytes between two rows are that round's, idle polling included."""
        for key in rows:
            if key not in self.timeline:
                snap = self.proxy.meter.snapshot()
                self.timeline[key] = {"method": key[0], "round": key[1],
                                      "seconds": round(time.monotonic() - self.started, 2),
                                      **snap["directions"], "connections": snap["connections"]}

    def crash_and_resume(self) -> subprocess.Popen:
        """The server machine dies (SuperLink + ServerApp) with SuperNode 0; both come back
        on the same port, database and disks, and a new run continues from the checkpoint."""
        assert self.superlink is not None
        self.procs.kill(self.superlink)  # with its SuperExec and ServerApp
        self.procs.kill(self.node_procs[0])
        print(f"killed the SuperLink, its ServerApp and SuperNode 0 after {len(self.rows())} "
              "rows; restarting them", flush=True)  # fmt: skip
        self.start_superlink(resume=True)
        stale = self.stop_stale_runs()
        starts = self.restart_nodes([0])
        (self.layout.logs / "resume.json").write_text(json.dumps(
            {"stopped_runs": stale, "rows_before": len(self.rows()),
             "node_starts": starts}, indent=2) + "\n")  # fmt: skip
        return self.submit("flwr-run-resumed.log")

    def run(self, resume: bool = False, kill_node_after: int | None = None,
            kill_superlink_after: int | None = None) -> None:  # fmt: skip
        self.prepare(resume)
        self.proxy.start()
        try:
            self.start_superlink(resume)
            self.write_federation()
            if resume:
                self.stop_stale_runs()  # the run the stopped deployment left unfinished
                self.restart_nodes(list(range(self.plan.nodes)))
            else:
                if self.plan.secure:
                    self.register_nodes()
                for index in range(self.plan.nodes):
                    self.start_node(index)
            self.start_intruders()
            flwr = self.submit("flwr-run-resumed.log" if resume else "flwr-run.log")
            deadline = time.monotonic() + self.timeout
            while flwr.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the run took over {self.timeout:g} s; logs in "
                                       f"{self.layout.logs}")  # fmt: skip
                rows = self.rows()
                self.note_rows(rows)
                done = sum(1 for _, r in rows if r != 0)  # round 0 = the initial evaluation
                if kill_node_after is not None and done >= kill_node_after:
                    # Fault injection: SuperNode 0 dies without a goodbye (SIGKILL).
                    self.procs.kill(self.node_procs[0])
                    kill_node_after = None
                if kill_superlink_after is not None and done >= kill_superlink_after:
                    kill_superlink_after = None
                    flwr = self.crash_and_resume()
                time.sleep(0.5)
            self.note_rows(self.rows())
            log = "flwr-run-resumed.log" if (self.layout.logs / "flwr-run-resumed.log"
                                             ).exists() else "flwr-run.log"  # fmt: skip
            if flwr.returncode or not (self.layout.out / "summary.json").exists():
                raise RuntimeError(f"the deployment run failed (flwr run exit {flwr.returncode})"
                                   f"; logs in {self.layout.logs}\n{self._tail(log)}")  # fmt: skip
        finally:
            self.procs.stop()
            self.proxy.stop()
        self.write_wire_reports()

    def write_wire_reports(self) -> None:
        """``wire-timeline.csv`` (both levels) and, under TLS, the totals in summary.json."""
        if self.timeline:
            rows = list(self.timeline.values())
            with (self.layout.out / "wire-timeline.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        snap = self.proxy.meter.snapshot()
        path = self.layout.out / "summary.json"
        summary = json.loads(path.read_text())
        summary.setdefault("wire", {})["proxy"] = {
            "level": snap["level"], "level_means": snap["level_means"],
            **snap["directions"], "connections": snap["connections"],
            "note": "every byte between the nodes and the SuperLink over the whole deployment "
                    "(handshakes, idle polling, app bundles, registration and every round)",
        }  # fmt: skip
        if self.level == "tls":
            summary["wire"]["source"] = ("transport model (cleartext HTTP, pemn_fl.transport): "
                                         "the proxy cannot split TLS into rounds; measured TLS "
                                         "totals in wire.proxy")  # fmt: skip
        path.write_text(json.dumps(summary, indent=2) + "\n")


def shaped_links(settings: RunSettings, nodes: int) -> list[NodeLink] | None:
    """With ``--link``, each node's emulated link (``simulations.shaping``), drawn as the time
    model draws it (same profiles, same seed), so the model and the deployment agree on who
    has which link."""
    if not settings.link:
        return None
    from pemn_fl.profiles import population

    drawn = population(settings.link, settings.client_device, list(range(nodes)), settings.seed)
    return [NodeLink.of(link.uplink_mbps, link.downlink_mbps, link.rtt_ms)
            for link in (drawn.links[i] for i in range(nodes))]  # fmt: skip


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
    from simulations.run import method_names_of

    settings = plan.settings
    saved = C.load_server(layout.server_checkpoint)
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
    defaults = vars(parser.parse_args([]))
    resume = args.resume is not None
    try:
        check_run_only(args, defaults)
        check_timeout(args.timeout)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.clients = args.nodes
    try:
        if resume:
            plan, out = resumed_plan(args, parser)
            settings = plan.settings
        else:
            check_options(args)
            settings = settings_from_args(args)
            if settings.data_dir and not Path(settings.data_dir).is_absolute():
                # Every process runs in a directory of its own: give them all the same path.
                settings = dataclasses.replace(settings,
                                               data_dir=str(Path(settings.data_dir).resolve()))
            plan = Plan(settings, args.nodes, args.secure, args.unauthorized_nodes,
                        args.nodes_without_ca)  # fmt: skip
            if args.kill_superlink_after is not None:
                total = settings.num_server_rounds * len(settings.method_list)
                if not 1 <= args.kill_superlink_after < total:
                    raise SettingsError(f"--kill-superlink-after {args.kill_superlink_after}: "
                                        f"between 1 and {total - 1} (the run has {total} "
                                        "training rounds)")  # fmt: skip
            out = args.out or Path("results/runs") / time.strftime("deploy-%Y%m%d-%H%M%S")
        check_data(settings, plan.nodes)
        if not resume:
            prepare_out(out, args.overwrite)
            shutil.rmtree(Layout(out).state, ignore_errors=True)  # never a stale one
    except (SettingsError, DataError, PartitionError, ModelError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not resume and (note := unread_note(settings)):  # simulations.run's rule
        print(note, file=sys.stderr)
    if not resume:
        config = {"nodes": plan.nodes, "secure": plan.secure,
                  "unauthorized_nodes": plan.unauthorized_nodes,
                  "nodes_without_ca": plan.nodes_without_ca,
                  "command": " ".join(sys.argv), "engine": "deployment",
                  "settings": dataclasses.replace(settings, checkpoint_dir=CHECKPOINT_DIR
                                                  ).to_run_config(),
                  "versions": versions()}  # fmt: skip
        # Written first, so even a deployment that is killed says what it was.
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
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
