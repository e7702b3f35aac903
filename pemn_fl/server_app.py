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
from pemn_fl.methods import Method, settings_from
from pemn_fl.methods import get as get_method
from pemn_fl.methods.frames.replica import catchup_payload_bytes
from pemn_fl.modelfile import save
from pemn_fl.report import RoundLog, columns_for, plot_runs, summarize, summary_table
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


def _run_method(
    method: Method, grid: MeteredGrid, settings: RunSettings, sampler: RoundSampler,
    book: RoundLog, on_round: RoundCallback, models_dir: Path | None = None,
    wire_model: dict[str, list[float]] | None = None,
    checkpoint_dir: Path | None = None, resume: C.ServerCheckpoint | None = None,
    index: int = 0, wall_timeout: float | None = None, clients_path: Path | None = None,
) -> None:  # fmt: skip
    """Drive the method's strategy with ``Strategy.start``; close each round's row.

    With ``clients_path``, each round's per-client rows (``pemn_fl.clientlog``) are appended
    there.
    With ``models_dir``, the final global model is written to ``<models_dir>/<method>.pemn``;
    with ``checkpoint_dir``, the server's state after each round (``pemn_fl.checkpoint``);
    ``resume`` continues this method from such a checkpoint; ``index`` is the method's place
    in ``settings.method_list`` (checkpoints order methods by it). ``wall_timeout``: how long
    Flower waits for a round's replies, if not the round deadline (the simulator, where the
    deadline is judged on each client's own work: ``pemn_fl.faults``).
    """
    side = method.server(settings, sampler)
    strategy = side.strategy
    data = N.dataset_of(settings)
    forward = F.forward_flops(side.model, data.input_shape)
    work = clientlog.Work(F.TRAIN_FLOPS_PER_FORWARD * forward, settings.local_epochs,
                          N.partition_sizes(settings, len(sampler.node_of_partition)))
    parameters = method.num_params(settings)
    live = live_clock(settings, sampler, work, method.name, book, clients_path)
    grid.clock = live
    clock = [time.monotonic()]
    fingerprint = fingerprint_of(side) if models_dir is not None else ""
    offset, initial = 0, side.initial
    if resume is not None:
        C.restore_strategy(strategy, resume, sampler.node_of_partition)
        offset, initial = resume.round, C.record_of(resume.arrays)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if resume is not None and server_round == 0:
            # A resumed method: its round ``offset`` is logged already (also when that is
            # round 0, a run killed right after its initial evaluation).
            return None
        server_round += offset
        side.install(arrays)
        loss, acc = evaluate(side.model, data.x_test, data.y_test, settings.torch_device)
        traffic = grid.take()
        if wire_model is not None:  # the transport model's figure, beside a measured one
            totals = wire_model.setdefault(method.name, [0.0, 0.0])
            totals[0] += traffic.model_uplink_wire_bytes
            totals[1] += traffic.model_downlink_wire_bytes
        rejected = int(getattr(strategy, "rejected", 0)) if server_round else 0
        now = time.monotonic()
        replies = traffic.messages_up - traffic.error_replies
        server_work = F.server_flops(forward, len(data.y_test), parameters,
                                     replies if server_round else 0)  # fmt: skip
        row = book.add(
            method.name, server_round, traffic,
            sampled=len(sampler(server_round)) if server_round else 0,
            rejected=rejected, accuracy=acc, loss=loss, wall_s=now - clock[0],
            server_flops=server_work,
            timing=None if live is None else live.finish(server_work),
        )  # fmt: skip
        if clients_path is not None:
            clientlog.append(clients_path, clientlog.rows(
                method.name, server_round, traffic.clients, sampler.partition_of, work))
        clock[0] = now
        if models_dir is not None and server_round == settings.num_server_rounds:
            models_dir.mkdir(parents=True, exist_ok=True)
            save(models_dir / f"{method.name}.pemn", export_model(
                method, settings, fingerprint, arrays, server_round, acc))  # fmt: skip
        if checkpoint_dir is not None:  # after the row is on disk: resume starts after it
            C.save_server(checkpoint_dir, C.ServerCheckpoint(
                method=method.name, method_index=index, round=server_round,
                arrays=C.arrays_of(arrays), node_of_partition=dict(sampler.node_of_partition),
                strategy=C.strategy_state(strategy, static=[sampler, data]),
                settings=settings.to_run_config()))  # fmt: skip
        on_round(row)
        for node, why in traffic.late:
            log.warning("%s round %s: %s missed the round deadline: %s", method.name,
                        server_round, sampler.label(node), why)  # fmt: skip
        problem = empty_round_problem(settings, server_round, traffic, rejected)
        if problem:
            raise ProtocolError(f"{method.name} round {server_round}: {problem}")
        return MetricRecord({"accuracy": acc, "loss": loss})

    driver = strategy if not offset else C.ResumedStrategy(strategy, offset)
    try:
        driver.start(
            grid=grid, initial_arrays=initial, num_rounds=settings.num_server_rounds - offset,
            evaluate_fn=evaluate_fn, timeout=wall_timeout or settings.round_deadline,
        )  # fmt: skip
    finally:
        grid.clock = None


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
    saved = None
    if resume:
        if ckpt_dir is None or csv_path is None:
            raise C.CheckpointError("resume needs a checkpoint directory and a rounds.csv")
        saved = C.load_server(ckpt_dir)
        def same(config: dict[str, object]) -> dict[str, object]:
            return {k: v for k, v in config.items() if k != "checkpoint-dir"}  # may move

        if same(saved.settings) != same(settings.to_run_config()):
            raise C.CheckpointError(f"{ckpt_dir}: the checkpoint was written with other "
                                    "settings than this run's")  # fmt: skip
    poll_faster(grid)
    metered = MeteredGrid(grid, wire_meter=wire_meter, catchup=catchup_payload_bytes)
    wire_model: dict[str, list[float]] = {}
    mapping = handshake(metered, settings.min_nodes)
    setup = metered.take()
    sampler = RoundSampler(mapping, settings.fraction, settings.seed, settings.sampler,
                           settings.sticky_group, settings.sticky_change)  # fmt: skip
    rows = (C.finished_rows(csv_path, settings.method_list, saved, settings.num_server_rounds,
                            columns_for(bool(settings.link))) if saved else [])  # fmt: skip
    clients_path = None if csv_path is None else csv_path.with_name(CLIENTS_FILE)
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
    for index, name in enumerate(settings.method_list):
        resume_from = None
        if saved is not None and index <= saved.method_index:
            if index < saved.method_index or saved.round >= settings.num_server_rounds:
                continue  # finished before the run stopped
            resume_from = saved
        _run_method(get_method(name), metered, settings, sampler, book,
                    on_round or (lambda row: None), models_dir, wire_model,
                    ckpt_dir, resume_from, index, wall_timeout, clients_path)  # fmt: skip
    summary = summarize(book.frame(), setup_bytes=setup.total_bytes, level=settings.bytes_level)
    if settings.link:
        summary["time"] = {"link": settings.link, "client_device": settings.client_device,
                           "server_device": settings.server_device,
                           "transport": settings.transport,
                           "round_deadline_s": settings.round_deadline,
                           "methods": summarize_time(book.frame(), summary["target_accuracy"])}  # type: ignore[arg-type]
    summary["nodes"] = len(mapping)
    summary["wire"] = {"source": "measured (byte-counting proxy)" if wire_meter is not None
                       else "transport model (pemn_fl.transport)"}  # fmt: skip
    if wire_meter is not None:
        # Traffic that is not any round's: idle polls and heartbeats, the app bundle, node
        # registration; and, per method, what the transport model says for its messages.
        totals = wire_meter.read()
        summary["wire"].update({f"{k}_bytes": totals.get(k, 0)
                                for k in ("idle", "bundle", "control", "unparsed")})  # fmt: skip
        summary["wire"]["model"] = {
            name: {"uplink_wire_bytes": round(up), "downlink_wire_bytes": round(down)}
            for name, (up, down) in wire_model.items()
        }
    return book, summary


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
