"""In-process Flower plumbing for strategy tests: what the engine does between a server
strategy and its nodes, on real ``Message`` objects, without starting an engine.

Use with the ``flower_identity`` fixture (``tests/conftest.py``): Flower stamps replies with
the identity of the task that built them, which outside an engine must be set by hand.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl.config import RunSettings
from pemn_fl.methods import settings_from
from pemn_fl.methods.base import ServerSide
from pemn_fl.sampling import RoundSampler

FIRST_NODE = 100  # node id of partition 0; partition p is node 100 + p


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


def deliver(msg: Message, step: Callable[[Message, Context, RunSettings], Message],
            ctx: Context, settings: RunSettings) -> Message:  # fmt: skip
    """Hand ``msg`` to a node's client step and return its reply, addressed as the engine would."""
    stamp(msg, SUPERLINK_NODE_ID)
    return stamp(step(msg, ctx, settings), msg.metadata.dst_node_id)


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
    side, nodes = method.server(settings, sampler), contexts(partitions)
    sent = side.strategy.configure_train(1, side.initial, ConfigRecord(), None)
    replies = [deliver(m, method.client_step, nodes[m.metadata.dst_node_id], settings)
               for m in sent]  # fmt: skip
    new, _ = side.strategy.aggregate_train(1, replies)
    return side, replies, new
