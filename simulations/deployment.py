"""One deployment on loopback, as ``simulations.deploy`` runs it: where its files live
(``Layout``), what it starts (``Plan``) and its processes from start to stop
(``Deployment``): the SuperLink, the SuperNodes (and the intruders a ``--secure`` run must
refuse) behind the byte-counting proxy, the ``flwr run`` that submits the app, the faults
injected into them, and the wire reports at the end."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pemn_fl.config import RunSettings
from pemn_fl.options import toml_value
from simulations import secure as S
from simulations.processes import HOST, Processes, executable, free_port
from simulations.shaping import shaped_links
from simulations.wireproxy import WireProxy

ROOT = Path(__file__).resolve().parents[1]


FEDERATION = "deploy"


# Each process resolves this against its own working directory: the SuperLink's (where the
# ServerApp runs) holds the server checkpoint, each SuperNode's its own client checkpoint.
CHECKPOINT_DIR = "checkpoint"


def run_config(settings: RunSettings) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in settings.to_run_config().items())


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
        cmd = [executable("flower-superlink"), "--host", HOST, "--port", str(self.port),
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
        proc = subprocess.run([executable("flwr"), *args], cwd=self.layout.link_dir,
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
        cmd = [executable("flower-supernode"), "--superlink",
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
            [executable("flwr"), "run", str(ROOT), FEDERATION, "--stream",
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
