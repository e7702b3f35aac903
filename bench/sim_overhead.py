"""The Simulation Engine's cost on top of its clients' compute: ``python -m bench.sim_overhead``.

For each preset and method, the same client rounds run twice:

(a) **plain loop**: in this process, the method's own server strategy and client step called
    as functions (``configure_train`` -> each sampled client's step -> ``aggregate_train``
    -> server evaluation), one thread, timing each piece;
(a') **parallel plain loop**: the same calls, the client steps handed to ``--parallel``
    worker processes (one thread each, a ``ProcessPoolExecutor``, messages and contexts
    pickled both ways as the engine's actors receive them), timing each round's wall;
(b) **engine**: ``python -m simulations.run`` with the same settings, Flower's Simulation
    Engine (Ray) running ``--parallel`` clients side by side; its per-round wall time comes
    from ``rounds.csv`` (``wall_s``: one round's configure, training, aggregation and
    evaluation, metered).

The ideal engine round is the plain loop's client compute divided by the parallelism, plus
the server's own work (configure, aggregate, evaluate), which does not parallelise:
``engine / ideal``. That ideal assumes two clients side by side run as fast as one alone and
split perfectly evenly; on this 2-vCPU machine neither holds (each client step runs ~10-15%
slower beside another, and ten clients of unequal size do not split into equal halves), so
``engine / parallel loop`` compares the engine with the same rounds really split over the same
number of processes without Flower: the engine's own cost. The table prints medians over
rounds 2.. (round 1 includes start-up, shown apart). Target (method-zoo issue): at most 1.15.

Writes ``results/bench/sim_overhead.csv``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from bench.accuracy_frontier import PRESETS  # the same two settings as the accuracy study
from bench.common import add_csv_out, add_methods, add_rounds, bench_parser, write_table
from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.data import Dataset
from pemn_fl.methods import Method, ServerSide, get
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import evaluate


def _settings(options: list[str], method: str, rounds: int) -> tuple[RunSettings, int]:
    from simulations.run import build_parser, settings_from_args

    args = build_parser().parse_args([*options, "--methods", method, "--rounds", str(rounds)])
    return settings_from_args(args), args.clients


def _federation(settings: RunSettings, clients: int, method_name: str
                ) -> tuple[Method, ServerSide, Dataset, dict[int, Context]]:  # fmt: skip
    """The method, its server side, the data and one context per partition (node 1000 + pid)."""
    method = get(method_name)
    node_of = {pid: 1000 + pid for pid in range(clients)}
    side = method.server(settings, RoundSampler(node_of, settings.fraction, settings.seed))
    contexts = {
        pid: Context(run_id=1, node_id=node,
                     node_config={"partition-id": pid, "num-partitions": clients},
                     state=RecordDict(), run_config={})  # fmt: skip
        for pid, node in node_of.items()
    }
    return method, side, N.dataset_of(settings), contexts


def plain_loop(settings: RunSettings, clients: int, method_name: str) -> pd.DataFrame:
    """Every round of one method as plain function calls; seconds per piece per round."""
    _worker_init()
    method, side, data, contexts = _federation(settings, clients, method_name)
    strategy = side.strategy
    arrays, rows = side.initial, []
    for r in range(1, settings.num_server_rounds + 1):
        t0 = time.perf_counter()
        sent = list(strategy.configure_train(r, arrays, ConfigRecord(), None))  # type: ignore[arg-type]
        configure = time.perf_counter() - t0
        replies, client_s = [], []
        for msg in sent:
            msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            t = time.perf_counter()
            reply = method.client_step(msg, contexts[msg.metadata.dst_node_id - 1000], settings)
            client_s.append(time.perf_counter() - t)
            reply.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
            replies.append(reply)
        t = time.perf_counter()
        new, _ = strategy.aggregate_train(r, replies)
        aggregate = time.perf_counter() - t
        arrays = new if new is not None else arrays
        t = time.perf_counter()
        side.install(arrays)
        evaluate(side.model, data.x_test, data.y_test)
        evaluation = time.perf_counter() - t
        rows.append({"round": r, "clients": len(sent), "client_compute_s": sum(client_s),
                     "server_s": configure + aggregate + evaluation,
                     "evaluate_s": evaluation})  # fmt: skip
    return pd.DataFrame(rows)


def _worker_init() -> None:
    torch.set_num_threads(1)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def _client_job(method_name: str, msg: Message, context: Context, settings: RunSettings
                ) -> tuple[Message, Context]:  # fmt: skip
    """One client step in a worker process; the context goes back as Ray's actors send it."""
    reply = get(method_name).client_step(msg, context, settings)
    reply.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
    return reply, context


def parallel_loop(settings: RunSettings, clients: int, method_name: str, parallel: int
                  ) -> pd.DataFrame:  # fmt: skip
    """Every round with the client steps split over ``parallel`` processes; wall per round."""
    _worker_init()
    _, side, data, contexts = _federation(settings, clients, method_name)
    arrays, rows = side.initial, []
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(parallel, mp_context=spawn, initializer=_worker_init) as pool:
        for r in range(1, settings.num_server_rounds + 1):
            t0 = time.perf_counter()
            sent = list(side.strategy.configure_train(r, arrays, ConfigRecord(), None))  # type: ignore[arg-type]
            futures = []
            for msg in sent:
                msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
                pid = msg.metadata.dst_node_id - 1000
                futures.append((pid, pool.submit(_client_job, method_name, msg,
                                                 contexts[pid], settings)))  # fmt: skip
            replies = []
            for pid, future in futures:
                reply, contexts[pid] = future.result()
                replies.append(reply)
            new, _ = side.strategy.aggregate_train(r, replies)
            arrays = new if new is not None else arrays
            side.install(arrays)
            evaluate(side.model, data.x_test, data.y_test)
            rows.append({"round": r, "parallel_loop_s": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def engine(options: list[str], method: str, rounds: int, parallel: int) -> pd.DataFrame:
    """Per-round wall time of the same rounds in the Simulation Engine."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "simulations.run", *options, "--methods", method,
               "--rounds", str(rounds), "--cpus-per-client", f"{2 / parallel:g}", "--quiet",
               "--out", tmp]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
        frame = pd.read_csv(Path(tmp) / "rounds.csv")
        wall = json.loads((Path(tmp) / "summary.json").read_text()).get("wall_s")
    frame = frame[frame["round"] >= 1][["round", "wall_s"]].rename(columns={"wall_s": "engine_s"})
    frame.attrs["total_wall_s"] = wall
    return frame


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.sim_overhead", __doc__)
    p.add_argument("--presets", default="digits,fashion-mnist",
                   help="comma list of presets to time")
    add_methods(p, "evolve_dither,fedavg")
    add_rounds(p, 5)
    p.add_argument("--parallel", type=int, default=2, help="clients side by side in the engine")
    add_csv_out(p, Path("results/bench/sim_overhead.csv"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    for preset in args.presets.split(","):
        for method in args.methods.split(","):
            settings, clients = _settings(PRESETS[preset], method, args.rounds)
            loop = plain_loop(settings, clients, method)
            par = parallel_loop(settings, clients, method, args.parallel)
            eng = engine(PRESETS[preset], method, args.rounds, args.parallel)
            both = loop.merge(par, on="round").merge(eng, on="round")
            both["ideal_s"] = both["client_compute_s"] / args.parallel + both["server_s"]
            both["ratio"] = both["engine_s"] / both["ideal_s"]
            both["ratio_parallel"] = both["engine_s"] / both["parallel_loop_s"]
            later = both[both["round"] >= 2]
            first = both[both["round"] == 1].iloc[0]
            rows.append({
                "preset": preset, "method": method,
                "clients_per_round": int(later["clients"].median()),
                "client_compute_s": later["client_compute_s"].median(),
                "server_s": later["server_s"].median(),
                "ideal_s": later["ideal_s"].median(),
                "parallel_loop_s": later["parallel_loop_s"].median(),
                "engine_s": later["engine_s"].median(),
                "engine_over_ideal": float(np.median(later["ratio"])),
                "engine_over_parallel_loop": float(np.median(later["ratio_parallel"])),
                "round1_engine_s": first["engine_s"], "round1_ideal_s": first["ideal_s"],
                "round1_parallel_loop_s": first["parallel_loop_s"],
                "engine_total_wall_s": eng.attrs["total_wall_s"],
            })  # fmt: skip
            print(f"{preset} {method}: median engine/ideal {rows[-1]['engine_over_ideal']:.2f}, "
                  f"engine/parallel loop {rows[-1]['engine_over_parallel_loop']:.2f}", flush=True)
    write_table(pd.DataFrame(rows), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
