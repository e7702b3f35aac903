"""pemn-fl ServerApp: every selected method, same clients and rounds, every byte metered.

``run_experiment`` is the whole server side: wrap the Grid in ``MeteredGrid``, ask every
node which partition it serves (so the client sample is reproducible despite random node
ids), then run each method's strategy (from the registry, ``pemn_fl.methods``) with
``Strategy.start`` and a server-side ``evaluate_fn`` that closes each round's row in the
``RoundLog``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from pemn_fl import checkpoint as C
from pemn_fl import clientlog, profiles
from pemn_fl import compute as F
from pemn_fl import networks as N
from pemn_fl.accounting import MeteredGrid, Traffic, WireMeter
from pemn_fl.config import RunSettings
from pemn_fl.export import export_model, fingerprint_of
from pemn_fl.figure import plot_runs
from pemn_fl.methods import Method, settings_from
from pemn_fl.methods import get as get_method
from pemn_fl.methods.frames.replica import catchup_payload_bytes
from pemn_fl.modelfile import save
from pemn_fl.report import RoundLog, columns_for, summarize, summary_table
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import evaluate
from pemn_fl.timeline import RoundInput, Timeline
from pemn_fl.timesummary import summarize_time, time_lines
from pemn_fl.timing import LiveClock, client_rounds

log = logging.getLogger("pemn_fl.server")
RoundCallback = Callable[[dict[str, object]], None]


class ProtocolError(RuntimeError):
    """The federation cannot run (e.g. every client rejects the prototype)."""


SIMULATION_PULL_INTERVAL = 0.01  # seconds
CLIENTS_FILE = "clients.csv"  # beside rounds.csv: per sampled client and round


def poll_faster(grid: Grid) -> None:
    """In simulation, poll for replies every 10 ms instead of Flower's 0.1 s.

    The Simulation Engine's grid (Flower's ``InMemoryGrid``) sleeps ``pull_interval``
    between polls of the in-memory SuperLink state, so each round waits ~50 ms on average
    after its last reply; a poll there is a dict lookup under a lock. A deployment's grid
    talks to a real SuperLink, has no such attribute and keeps its own pacing.
    """
    if isinstance(getattr(grid, "pull_interval", None), float):
        grid.pull_interval = min(grid.pull_interval, SIMULATION_PULL_INTERVAL)  # type: ignore[attr-defined]


def handshake(grid: Grid, min_nodes: int, timeout: float = 300.0) -> dict[int, int]:
    """Wait for ``min_nodes`` nodes, then map partition id -> node id (one query each)."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < min_nodes:
        if time.monotonic() > deadline:
            raise ProtocolError(f"only {len(nodes)} of {min_nodes} nodes connected in {timeout}s")
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    messages = [
        Message(content=RecordDict({"hello": ConfigRecord({})}), dst_node_id=n,
                message_type="query.hello")
        for n in nodes
    ]  # fmt: skip
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            log.warning("node %s failed the handshake: %s", reply.metadata.src_node_id,
                        reply.error.reason)  # fmt: skip
            continue
        mapping[int(reply.content["node"]["partition-id"])] = reply.metadata.src_node_id
    if not mapping:
        raise ProtocolError("no node answered the handshake")
    return mapping


@dataclass(frozen=True)
class Outputs:
    """Where the server writes besides the round log, each optional: the final model of
    every method (``<models_dir>/<method>.pemn``), its state after every round
    (``checkpoint_dir``, ``pemn_fl.checkpoint``), each round's per-client rows
    (``clients_path``, ``pemn_fl.clientlog``) and, beside a measured wire, the transport
    model's figure per method (``wire_model``, filled in)."""

    models_dir: Path | None = None
    checkpoint_dir: Path | None = None
    clients_path: Path | None = None
    wire_model: dict[str, list[float]] | None = None


class MethodRun:
    """One method on the server: its strategy driven by ``Strategy.start``, and after every
    round (its ``evaluate_fn``) the round closed in steps: evaluate the global model, log the
    row, export the final model, save the checkpoint, check the round.

    ``resume`` continues the method from such a checkpoint; ``index`` is its place in
    ``settings.method_list`` (checkpoints order methods by it)."""

    def __init__(self, method: Method, grid: MeteredGrid, settings: RunSettings,
                 sampler: RoundSampler, book: RoundLog, on_round: RoundCallback,
                 outputs: Outputs, resume: C.ServerCheckpoint | None = None,
                 index: int = 0) -> None:  # fmt: skip
        self.method, self.grid, self.settings, self.sampler = method, grid, settings, sampler
        self.book, self.on_round, self.outputs, self.index = book, on_round, outputs, index
        self.side = method.server(settings, sampler)
        self.data = N.dataset_of(settings)
        self.forward = F.forward_flops(self.side.model, self.data.input_shape)
        self.work = clientlog.Work(F.TRAIN_FLOPS_PER_FORWARD * self.forward,
                                   settings.local_epochs,
                                   N.partition_sizes(settings, len(sampler.node_of_partition)))
        self.parameters = method.num_params(settings)
        self.live = live_clock(settings, sampler, self.work, method.name, book,
                               outputs.clients_path)  # fmt: skip
        self.clock = time.monotonic()  # each row's wall_s: since the row before
        self.fingerprint = fingerprint_of(self.side) if outputs.models_dir is not None else ""
        self.resumed = resume is not None
        self.offset, self.initial = 0, self.side.initial
        if resume is not None:
            C.restore_strategy(self.side.strategy, resume, sampler.node_of_partition)
            self.offset, self.initial = resume.round, C.record_of(resume.arrays)

    def run(self, wall_timeout: float | None = None) -> None:
        """Every (remaining) round. ``wall_timeout``: how long Flower waits for a round's
        replies, if not the round deadline (the simulator, where the deadline is judged on
        each client's own work: ``pemn_fl.faults``)."""
        strategy = self.side.strategy
        driver = strategy if not self.offset else C.ResumedStrategy(strategy, self.offset)
        self.grid.clock = self.live
        try:
            driver.start(
                grid=self.grid, initial_arrays=self.initial,
                num_rounds=self.settings.num_server_rounds - self.offset,
                evaluate_fn=self.evaluate, timeout=wall_timeout or self.settings.round_deadline,
            )  # fmt: skip
        finally:
            self.grid.clock = None

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Close round ``server_round`` (of this run: ``offset`` is added for a resumed
        method) with the global ``arrays``."""
        if self.resumed and server_round == 0:
            # A resumed method: its round ``offset`` is logged already (also when that is
            # round 0, a run killed right after its initial evaluation).
            return None
        server_round += self.offset
        self.side.install(arrays)
        loss, acc = evaluate(self.side.model, self.data.x_test, self.data.y_test,
                             self.settings.torch_device)  # fmt: skip
        traffic = self.grid.take()
        rejected = int(getattr(self.side.strategy, "rejected", 0)) if server_round else 0
        row = self.log_row(server_round, traffic, rejected, acc, loss)
        self.export(server_round, arrays, acc)
        self.save_checkpoint(server_round, arrays)  # after the row: resume starts after it
        self.on_round(row)
        self.check_round(server_round, traffic, rejected)
        return MetricRecord({"accuracy": acc, "loss": loss})

    def log_row(self, server_round: int, traffic: Traffic, rejected: int, acc: float,
                loss: float) -> dict[str, object]:  # fmt: skip
        """The round's row in the log (and its clients' rows), with its bytes and time."""
        name = self.method.name
        if self.outputs.wire_model is not None:  # the transport model's, beside a measured one
            totals = self.outputs.wire_model.setdefault(name, [0.0, 0.0])
            totals[0] += traffic.model_uplink_wire_bytes
            totals[1] += traffic.model_downlink_wire_bytes
        now = time.monotonic()
        replies = traffic.messages_up - traffic.error_replies
        server_work = F.server_flops(self.forward, len(self.data.y_test), self.parameters,
                                     replies if server_round else 0)  # fmt: skip
        row = self.book.add(
            name, server_round, traffic,
            sampled=len(self.sampler(server_round)) if server_round else 0,
            rejected=rejected, accuracy=acc, loss=loss, wall_s=now - self.clock,
            server_flops=server_work,
            timing=None if self.live is None else self.live.finish(server_work),
        )  # fmt: skip
        if self.outputs.clients_path is not None:
            clientlog.append(self.outputs.clients_path, clientlog.rows(
                name, server_round, traffic.clients, self.sampler.partition_of, self.work))
        self.clock = now
        return row

    def export(self, server_round: int, arrays: ArrayRecord, acc: float) -> None:
        """After the last round: the final model, ``<models_dir>/<method>.pemn``."""
        models_dir = self.outputs.models_dir
        if models_dir is None or server_round != self.settings.num_server_rounds:
            return
        models_dir.mkdir(parents=True, exist_ok=True)
        save(models_dir / f"{self.method.name}.pemn", export_model(
            self.method, self.settings, self.fingerprint, arrays, server_round, acc))  # fmt: skip

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        """The server's state after ``server_round`` (``--resume`` continues from it)."""
        if self.outputs.checkpoint_dir is None:
            return
        strategy = self.side.strategy
        C.save_server(self.outputs.checkpoint_dir, C.ServerCheckpoint(
            method=self.method.name, method_index=self.index, round=server_round,
            arrays=C.arrays_of(arrays), node_of_partition=dict(self.sampler.node_of_partition),
            strategy=C.strategy_state(strategy, static=[self.sampler, self.data]),
            settings=self.settings.to_run_config()))  # fmt: skip

    def check_round(self, server_round: int, traffic: Traffic, rejected: int) -> None:
        """Say who missed the deadline; stop the run if the round shows it cannot go on."""
        for node, why in traffic.late:
            log.warning("%s round %s: %s missed the round deadline: %s", self.method.name,
                        server_round, self.sampler.label(node), why)  # fmt: skip
        problem = empty_round_problem(self.settings, server_round, traffic, rejected)
        if problem:
            raise ProtocolError(f"{self.method.name} round {server_round}: {problem}")


def live_clock(settings: RunSettings, sampler: RoundSampler, work: clientlog.Work, method: str,
               book: RoundLog, clients_path: Path | None) -> LiveClock | None:  # fmt: skip
    """With ``--link``, the time model in the loop for ``method`` (``timeline.LiveClock``);
    a resumed method's finished rounds are replayed from the record first, so its clock
    and every node's poll phase are where the uninterrupted run had them."""
    if not settings.link:
        return None
    partitions = sorted(sampler.node_of_partition)
    population = profiles.population(settings.link, settings.client_device, partitions,
                                     settings.seed)  # fmt: skip
    line = Timeline(population.links, population.devices,
                    profiles.server_device(settings.server_device),
                    transport=settings.transport, deadline=settings.round_deadline,
                    seed=settings.seed)  # fmt: skip
    live = LiveClock(line, sampler.partition_of, work.train_flops)
    done = sorted((r for r in book.rows if r["method"] == method), key=lambda r: r["round"])  # type: ignore[arg-type, return-value]
    if done:
        recorded = (clientlog.read(clients_path) if clients_path and clients_path.is_file()
                    else None)  # fmt: skip
        by_round = {} if recorded is None else client_rounds(
            recorded[recorded["method"] == method])  # fmt: skip
        for row in done:
            number = int(row["round"])  # type: ignore[call-overload]
            line.round(RoundInput(number, tuple(by_round.get((method, number), [])),
                                  int(row["server_flops"])))  # type: ignore[call-overload]
            live.rounds = number
    return live


def empty_round_problem(settings: RunSettings, server_round: int, traffic: Traffic,
                        rejected: int) -> str | None:  # fmt: skip
    """Why a round without one usable reply means the run cannot go on, or ``None``.

    With injected faults an empty round can happen by chance: the model stays put and the
    next round goes on (every method recovers). Without them it is a setup error, and so is
    a round whose clients were all late by their own work, faults or not: the deadline is
    shorter than a client's round, and every round would be lost the same way.
    """
    usable = traffic.messages_up - rejected
    if server_round < 1 or usable > 0:
        return None
    own = [why for _, why in traffic.late if "own work" in why]
    if own:
        return (f"no usable reply: {len(own)} client(s) took longer than the "
                f"--round-deadline of {settings.round_deadline:g} s for their own work "
                f"({own[0]}); raise --round-deadline")  # fmt: skip
    injected = (settings.drop_rate > 0 or settings.corrupt_rate > 0 or settings.byzantine > 0
                or settings.straggler_rate > 0)  # fmt: skip
    if injected:
        return None
    if traffic.messages_up == 0:
        return (f"no client replied within the --round-deadline of "
                f"{settings.round_deadline:g} s; raise it, or check that the nodes run")
    if traffic.error_replies == traffic.messages_up:
        return f"every sampled client failed; the first said: {traffic.errors[0]}"
    return ("every client reply was rejected; see the warnings above (a prototype "
            "fingerprint mismatch means client and server settings differ)")


def parameter_counts(settings: RunSettings) -> dict[str, int]:
    """Parameters each method's payload describes (the denominator of bits/param)."""
    methods = [get_method(spec) for spec in settings.method_list]
    return {method.name: method.num_params(settings) for method in methods}


def run_experiment(
    grid: Grid, settings: RunSettings, on_round: RoundCallback | None = None,
    csv_path: Path | None = None, models_dir: Path | None = None,
    wire_meter: WireMeter | None = None, resume: bool = False,
    wall_timeout: float | None = None,
) -> tuple[RoundLog, dict[str, object]]:  # fmt: skip
    """Run every method in ``settings.methods`` on ``grid``; return the log and the summary.

    With ``csv_path``, rows are appended to that CSV as each round finishes; with
    ``models_dir``, each method's final model is written there as ``<method>.pemn``. With
    ``wire_meter`` (a deployment behind the byte-counting proxy), the wire columns are
    measured and the summary gives the transport model's figure beside them. With
    ``settings.checkpoint_dir``, the server state is saved after every round; ``resume``
    continues from it (the rows it covers are kept from ``csv_path``, the rest dropped).
    """
    ckpt_dir = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    saved = saved_checkpoint(settings, ckpt_dir, csv_path) if resume else None
    poll_faster(grid)
    metered = MeteredGrid(grid, wire_meter=wire_meter, catchup=catchup_payload_bytes)
    mapping = handshake(metered, settings.min_nodes)
    setup = metered.take()
    sampler = RoundSampler(mapping, settings.fraction, settings.seed, settings.sampler,
                           settings.sticky_group, settings.sticky_change)  # fmt: skip
    clients_path = None if csv_path is None else csv_path.with_name(CLIENTS_FILE)
    book = round_log(settings, csv_path, clients_path, saved)
    outputs = Outputs(models_dir, ckpt_dir, clients_path, {})
    for index, name in enumerate(settings.method_list):
        resume_from = None
        if saved is not None and index <= saved.method_index:
            if index < saved.method_index or saved.round >= settings.num_server_rounds:
                continue  # finished before the run stopped
            resume_from = saved
        MethodRun(get_method(name), metered, settings, sampler, book,
                  on_round or (lambda row: None), outputs, resume_from,
                  index).run(wall_timeout)  # fmt: skip
    summary = summarize(book.frame(), setup_bytes=setup.total_bytes, level=settings.bytes_level)
    if settings.link:
        summary["time"] = time_summary(settings, book, summary)
    summary["nodes"] = len(mapping)
    summary["wire"] = wire_summary(wire_meter, outputs.wire_model or {})
    return book, summary


def saved_checkpoint(settings: RunSettings, ckpt_dir: Path | None,
                     csv_path: Path | None) -> C.ServerCheckpoint:  # fmt: skip
    """The server checkpoint a resumed run continues from, written with these settings."""
    if ckpt_dir is None or csv_path is None:
        raise C.CheckpointError("resume needs a checkpoint directory and a rounds.csv")
    saved = C.load_server(ckpt_dir)

    def same(config: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in config.items() if k != "checkpoint-dir"}  # may move

    if same(saved.settings) != same(settings.to_run_config()):
        raise C.CheckpointError(f"{ckpt_dir}: the checkpoint was written with other "
                                "settings than this run's")  # fmt: skip
    return saved


def round_log(settings: RunSettings, csv_path: Path | None, clients_path: Path | None,
              saved: C.ServerCheckpoint | None) -> RoundLog:  # fmt: skip
    """The run's log, holding the rows (and client rows) a resumed run keeps; the files are
    written afresh from there."""
    rows = (C.finished_rows(csv_path, settings.method_list, saved, settings.num_server_rounds,
                            columns_for(bool(settings.link))) if saved else [])  # fmt: skip
    if clients_path is not None:
        if saved is not None:  # keep the client rows of the rounds the checkpoint covers
            clientlog.keep_rounds(clients_path, {(str(r["method"]), int(r["round"]))  # type: ignore[call-overload]
                                                 for r in rows})  # fmt: skip
        else:
            clients_path.unlink(missing_ok=True)
    if csv_path is not None:
        csv_path.unlink(missing_ok=True)
    book = RoundLog(params=parameter_counts(settings), path=csv_path, timed=bool(settings.link))
    book.extend(rows)
    return book


def time_summary(settings: RunSettings, book: RoundLog,
                 summary: dict[str, object]) -> dict[str, object]:  # fmt: skip
    """The summary's ``time`` part (with ``--link``): the time model and each method's time
    and energy to the target."""
    return {"link": settings.link, "client_device": settings.client_device,
            "server_device": settings.server_device, "transport": settings.transport,
            "round_deadline_s": settings.round_deadline,
            "methods": summarize_time(book.frame(), summary["target_accuracy"])}  # type: ignore[arg-type]


def wire_summary(wire_meter: WireMeter | None,
                 wire_model: dict[str, list[float]]) -> dict[str, object]:  # fmt: skip
    """The summary's ``wire`` part: where the wire bytes come from and, measured, the
    traffic that is no round's and the transport model's figure per method."""
    wire: dict[str, object] = {"source": "measured (byte-counting proxy)"
                               if wire_meter is not None
                               else "transport model (pemn_fl.transport)"}  # fmt: skip
    if wire_meter is not None:
        # Traffic that is not any round's: idle polls and heartbeats, the app bundle, node
        # registration; and, per method, what the transport model says for its messages.
        totals = wire_meter.read()
        wire.update({f"{k}_bytes": totals.get(k, 0)
                     for k in ("idle", "bundle", "control", "unparsed")})  # fmt: skip
        wire["model"] = {
            name: {"uplink_wire_bytes": round(up), "downlink_wire_bytes": round(down)}
            for name, (up, down) in wire_model.items()
        }
    return wire


def write_outputs(out: Path, book: RoundLog, summary: dict[str, object], title: str) -> None:
    """rounds.csv, summary.json and bandwidth_accuracy.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    book.write(out / "rounds.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_runs([out], out / "bandwidth_accuracy.png", title=title,
              level=str(summary.get("bytes_level", "wire")))  # fmt: skip


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point under ``flwr run .``: settings from the run config, outputs to out-dir."""
    settings = settings_from(dict(context.run_config))
    # Where this machine keeps the run's files is no experiment setting, so it comes from
    # the environment (the SuperLink passes its own on): ``simulations.deploy`` names the
    # run's directory (PEMN_FL_RUN_DIR) so that a resumed run finds its finished rows there,
    # and asks for a resume from ``checkpoint-dir`` with PEMN_FL_RESUME=1.
    out = Path(os.environ.get("PEMN_FL_RUN_DIR")
               or Path("results/runs") / time.strftime("flwr-%Y%m%d-%H%M%S"))  # fmt: skip
    resume = os.environ.get("PEMN_FL_RESUME") == "1"
    # ``simulations.deploy`` puts a byte-counting proxy in front of the SuperLink and names
    # its meter file here (the SuperLink passes its environment on to the ServerApp).
    meter = os.environ.get("PEMN_FL_WIRE_METER")
    if meter and not Path(meter).is_file():
        log.error("PEMN_FL_WIRE_METER=%s: no such file (the proxy writes it before the "
                  "SuperLink starts; give an absolute path); wire bytes will be modelled",
                  meter)  # fmt: skip
        meter = None
    book, summary = run_experiment(grid, settings, csv_path=out / "rounds.csv",
                                   models_dir=out / "models",
                                   wire_meter=WireMeter(Path(meter)) if meter else None,
                                   resume=resume)
    write_outputs(out, book, summary, title=f"{settings.dataset} / {settings.model}")
    print(summary_table(summary) + time_lines(summary))
    print(f"results written to {out.resolve()}")
