"""In-process Flower plumbing for strategy tests: what the engine does between a server
strategy and its nodes, on real ``Message`` objects, without starting an engine: a node's
``context``, ``deliver`` one message to a client step, ``run_rounds`` for whole rounds; and
``another_run_holds`` a run directory, for the runner's tests.

Use with the ``flower_identity`` fixture (``tests/conftest.py``): Flower stamps replies with
the identity of the task that built them, which outside an engine must be set by hand.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl.config import RunSettings
from pemn_fl.methods import settings_from
from pemn_fl.methods.base import ServerSide
from pemn_fl.sampling import RoundSampler

ROOT = Path(__file__).resolve().parents[1]
FIRST_NODE = 100  # node id of partition 0; partition p is node 100 + p
Step = Callable[[Message, Context, RunSettings], Message | None]


def context(pid: int, partitions: int) -> Context:
    """A node's context as a SuperNode holds it: its partition, an empty state."""
    return Context(
        run_id=7, node_id=FIRST_NODE + pid,
        node_config={"partition-id": pid, "num-partitions": partitions},
        state=RecordDict(), run_config={},
    )  # fmt: skip


def contexts(partitions: int) -> dict[int, Context]:
    """Every node's context, by node id."""
    return {FIRST_NODE + p: context(p, partitions) for p in range(partitions)}


def stamp(msg: Message, src_node_id: int) -> Message:
    """Set who sent ``msg``, as the engine does on the way (Flower's metadata has no setter)."""
    msg.metadata.__dict__["_src_node_id"] = src_node_id
    return msg


def deliver(msg: Message, step: Step, ctx: Context, settings: RunSettings) -> Message:
    """Hand ``msg`` to a node's client step and return its reply, addressed as the engine
    would (None where the step gives none)."""
    stamp(msg, SUPERLINK_NODE_ID)
    reply = step(msg, ctx, settings)
    return None if reply is None else stamp(reply, msg.metadata.dst_node_id)


@dataclass
class Round:
    """One round as ``run_rounds`` drove it."""

    r: int
    sent: list[Message]  # the downlink, in the strategy's order
    replies: list[Message]  # what reached the server, in the order sent
    arrays: ArrayRecord | None  # aggregate_train's result
    metrics: MetricRecord | None


def run_rounds(strategy, rounds: Iterable[int], step: Step,  # noqa: ANN001
               nodes: Mapping[int, Context] | None = None, settings: RunSettings | None = None,
               arrays: ArrayRecord | None = None,
               tamper: Callable[[int, Message], Message | None] | None = None,
               ) -> Iterator[Round]:  # fmt: skip
    """Drive a server ``strategy`` through ``rounds`` as the engine does: each message it
    sends is delivered to ``step`` (a method's client step, or a hand-made answer) with its
    node's context from ``nodes`` (by node id), and the replies go to ``aggregate_train``.

    ``step`` returning None is a node that never answers; ``tamper(r, reply)`` sees each
    reply on its way back and returns it, another message, or None (lost). ``arrays`` goes
    into the first ``configure_train``, each round's new arrays (when it made some) into the
    next. Lazy: a round runs when the caller's loop asks for it, so the loop body sees the
    strategy and every node as they stand right after that round.
    """
    for r in rounds:
        sent = list(strategy.configure_train(r, arrays, ConfigRecord(), None))
        replies = []
        for msg in sent:
            ctx = None if nodes is None else nodes[msg.metadata.dst_node_id]
            reply = deliver(msg, step, ctx, settings)  # type: ignore[arg-type]
            if reply is not None and tamper is not None:
                reply = tamper(r, reply)
            if reply is not None:
                replies.append(reply)
        new, metrics = strategy.aggregate_train(r, replies)
        yield Round(r, sent, replies, new, metrics)
        arrays = new if new is not None else arrays


def replicated_rounds(strategy, rounds: Iterable[int], step: Step,  # noqa: ANN001
                      nodes: Mapping[int, Context], settings: RunSettings, name: str,
                      ) -> Iterator[Round]:  # fmt: skip
    """``run_rounds`` for a method whose every party holds a replica of one state
    (``methods.frames.replica``), checking after each round that the server refused no reply
    and that every node that took part holds exactly the state the server held when the
    round began (its ``<name>-weights``, at round r - 1)."""
    from pemn_fl.methods.frames import replica

    start = replica.digest(strategy.replica.state)
    for one in run_rounds(strategy, rounds, step, nodes, settings):
        assert one.arrays is not None and strategy.rejected == 0, one.r
        for m in one.sent:
            ctx = nodes[m.metadata.dst_node_id]
            held = ctx.state[f"{name}-weights"].to_numpy_ndarrays()
            assert replica.digest(held) == start, (one.r, m.metadata.dst_node_id)
            assert int(ctx.state[f"{name}-round"]["round"]) == one.r - 1
        start = replica.digest(strategy.replica.state)
        yield one


def scheduled(module, settings: RunSettings, partitions: int,  # noqa: ANN001
              schedule: dict[int, list[int]] | None = None) -> ServerSide:  # fmt: skip
    """The method's server side; ``schedule`` picks the partitions per round (all by default)."""
    node_of = {p: FIRST_NODE + p for p in range(partitions)}
    sampler = RoundSampler(node_of, 1.0, seed=0)
    side = module.METHOD.server(settings, sampler)
    if schedule is not None:
        side.strategy.sampler = type("S", (), {
            "__call__": lambda self, r: [node_of[p] for p in schedule.get(r, list(node_of))],
            "order_key": staticmethod(sampler.order_key),
        })()  # fmt: skip
    return side


def build_settings(**values: object) -> RunSettings:
    """Settings as the command line builds them: shared settings and method options alike by
    their snake_case names (``noise_scale=0.5``), checked against every declaration by
    ``pemn_fl.methods.settings_from``."""
    return settings_from({k.replace("_", "-"): v for k, v in values.items()})


def changed(base: RunSettings, **values: object) -> RunSettings:
    """``base`` with some settings or options changed (``dataclasses.replace`` for both)."""
    return settings_from({**base.to_run_config(),
                          **{k.replace("_", "-"): v for k, v in values.items()}})  # fmt: skip


def first_round(name: str, settings: RunSettings, partitions: int = 3
                ) -> tuple[ServerSide, list[Message], ArrayRecord | None]:  # fmt: skip
    """Round 1 of the registered method ``name`` on every partition, in-process: its server
    side, the replies and the new global arrays."""
    from pemn_fl.methods import get

    method = get(name)
    sampler = RoundSampler({p: FIRST_NODE + p for p in range(partitions)}, 1.0, seed=0)
    side = method.server(settings, sampler)
    (one,) = run_rounds(side.strategy, [1], method.client_step, contexts(partitions), settings,
                        side.initial)  # fmt: skip
    return side, one.replies, one.arrays


@contextmanager
def another_run_holds(out: Path) -> Iterator[subprocess.Popen]:
    """A second process holding ``out``'s run lock, as a run writing there does, until the
    block ends (then it is killed, and its lock goes with it)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from simulations.outdir import lock_out; "
        f"h = lock_out(Path({str(out)!r})); print('locked', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
