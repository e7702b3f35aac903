"""The fault draw's rules, exactly (``pemn_fl.faults``): one uniform per (seed, method,
partition, round) split into drop | corrupt | straggle | none by the cumulative rates; late
replies of both kinds dropped on arrival; a message without a round counts its messages.

``tests/test_faults.py`` checks the rates statistically and what the server does with a
faulty reply; these pin the rules a statistical check lets through (a rate that is not
cumulative, a draw keyed without the method, a straggler reply that is not late).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl import faults
from pemn_fl.prototype import derived_seed
from tests.harness import build_settings, context, stamp

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                          drop_rate=0.2, corrupt_rate=0.3, straggler_rate=0.25,
                          round_deadline=5.0)  # fmt: skip

pytestmark = pytest.mark.usefixtures("flower_identity")


def test_one_uniform_per_draw_split_by_the_cumulative_rates() -> None:
    # drop [0, 0.2), corrupt [0.2, 0.5), straggle [0.5, 0.75), none [0.75, 1).
    seen = set()
    for index in range(1, 1500):
        fault, seed = faults.fault_of(SETTINGS, "pemn", 2, index)
        assert seed == derived_seed(SETTINGS.seed, f"faults/pemn/2/{index}")
        u = np.random.default_rng(seed).random()
        expected = ("drop" if u < 0.2 else "corrupt" if u < 0.5 else "straggle" if u < 0.75
                    else None)  # fmt: skip
        assert fault == expected, (index, u)
        seen.add(fault)
    assert seen == {"drop", "corrupt", "straggle", None}


def test_each_method_partition_round_and_run_seed_draws_its_own_fault() -> None:
    def seeds(method: str = "pemn", partition: int = 0, settings: object = SETTINGS
              ) -> list[int]:  # fmt: skip
        return [faults.fault_of(settings, method, partition, r)[1]  # type: ignore[arg-type]
                for r in range(1, 6)]  # fmt: skip

    base = seeds()
    assert len(set(base)) == 5  # every round its own draw
    others = [seeds(method="fedavg"), seeds(partition=1),
              seeds(settings=dataclasses.replace(SETTINGS, seed=1))]  # fmt: skip
    for other in others:
        assert not set(other) & set(base)
    # A clean run draws nothing, and says so with seed 0.
    clean = build_settings(dataset="synthetic", model="mlp")
    msg = _train_message(3)
    assert faults.draw(clean, context(0, 3), "pemn", msg) == (None, 0)


def _train_message(server_round: int | None) -> Message:
    config = ConfigRecord({"server-round": server_round} if server_round is not None else {})
    msg = Message(content=RecordDict({"config": config}), dst_node_id=100,
                  message_type="train.pemn")  # fmt: skip
    return stamp(msg, SUPERLINK_NODE_ID)


def test_a_draw_is_the_rounds_and_a_message_without_a_round_counts_its_messages() -> None:
    ctx = context(2, 3)
    assert faults.round_of(_train_message(7)) == 7
    assert faults.draw(SETTINGS, ctx, "pemn", _train_message(7)) == faults.fault_of(
        SETTINGS, "pemn", 2, 7)  # fmt: skip
    # A plug-in's message without a round: messages -1, -2, -3 of this node, one by one.
    assert faults.round_of(_train_message(None)) is None
    draws = [faults.draw(SETTINGS, ctx, "plug", _train_message(None)) for _ in range(3)]
    assert draws == [faults.fault_of(SETTINGS, "plug", 2, i) for i in (-1, -2, -3)]
    assert ctx.state[f"{faults.COUNTER}-plug"]["n"] == 3


def test_late_replies_of_both_kinds_are_dropped_on_arrival_and_say_why() -> None:
    msg = _train_message(4)
    late = faults.late_reply(msg, 7.5, 5.0, straggler=False)
    straggled = faults.late_reply(msg, 6.0, 5.0, straggler=True)
    assert (late.error.code, straggled.error.code) == (faults.LATE, faults.STRAGGLED)
    assert late.error.reason == "its own work took 7.50 s, past the 5 s round deadline"
    assert "--straggler-rate" in straggled.error.reason
    assert faults.is_late(late) and faults.is_late(straggled)
    # Neither a node's own error nor a reply is late.
    crashed = Message(Error(code=0, reason="node died"), reply_to=msg)
    assert not faults.is_late(crashed)
    assert not faults.is_late(Message(RecordDict({"config": ConfigRecord({})}), reply_to=msg))
