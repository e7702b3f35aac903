"""Flower's Simulation Engine, as ``simulations.run`` drives it: where the clients run
(``Engine``: how many, with what resources, on which Ray cluster) and one simulation of a
run's settings with both Flower apps (``simulate``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path

from pemn_fl.config import RunSettings, SettingsError

# How long the simulator waits for a round's replies. Not the round deadline: in simulation
# each client judges that on its own work (pemn_fl.faults), since the engine's few actors
# serve the clients in turn and queueing is no client's fault.
SIMULATION_WALL_TIMEOUT = 3600.0


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
