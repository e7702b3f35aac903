"""Every method recovers from a round with no valid reply (issue 17).

A round where every sampled client fails (``--drop-rate``, a deadline, a dead node) gives the
server nothing to aggregate. Replicated methods used to leave that round out of their log,
so from the next round on every node waited for an ``update-<r>`` that never existed and
rejected every downlink, for good. Here every registered method, in-process on real Flower
messages, goes through such a round and must take valid updates again in the next one,
including from a node that was not sampled in the empty round.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Error, Message

from pemn_fl.config import RunSettings
from pemn_fl.methods import get, names
from pemn_fl.methods.frames import replica as R
from tests.harness import FIRST_NODE, build_settings, contexts, run_rounds, scheduled

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, batch_size=64, min_nodes=1)  # fmt: skip
PARTITIONS = 3
# Round 2 samples partitions 0 and 1 and both fail; partition 2 sits it out, so in round 3
# it has missed an empty round, and partition 1 must step over the round it failed in.
SCHEDULE = {1: [0, 1, 2], 2: [0, 1], 3: [1, 2], 4: [0, 2]}

pytestmark = pytest.mark.usefixtures("flower_identity")


class _Module:
    """What ``harness.scheduled`` needs of a method module: its ``METHOD``."""

    def __init__(self, name: str) -> None:
        self.METHOD = get(name)


def _crash(msg: Message, ctx: Context, settings: RunSettings) -> Message:
    """The client crashed before training: an error reply, its state untouched."""
    return Message(Error(code=0, reason="fault injection"), reply_to=msg)


def _round(method, side, nodes, r: int, arrays, fail: bool):  # noqa: ANN001, ANN202
    step = _crash if fail else method.client_step
    (one,) = run_rounds(side.strategy, [r], step, nodes, SETTINGS, arrays)
    return one.arrays, one.metrics


@pytest.mark.parametrize("name", names())
def test_the_round_after_an_empty_one_takes_every_valid_update(name: str) -> None:
    method = get(name)
    side = scheduled(_Module(name), SETTINGS, PARTITIONS, SCHEDULE)
    nodes = contexts(PARTITIONS)
    arrays = side.initial
    new, _ = _round(method, side, nodes, 1, arrays, fail=False)
    assert new is not None and side.strategy.rejected == 0
    arrays = new
    new, _ = _round(method, side, nodes, 2, arrays, fail=True)
    assert new is None  # nothing to aggregate: the model stays
    assert side.strategy.rejected == 2  # both error replies counted as refused
    for r in (3, 4):
        new, _ = _round(method, side, nodes, r, arrays, fail=False)
        assert side.strategy.rejected == 0, f"{name} round {r} refused valid replies"
        assert new is not None, f"{name} round {r} made no update"
        changed = any(not np.array_equal(a, b) for a, b in
                      zip(new.to_numpy_ndarrays(), arrays.to_numpy_ndarrays(), strict=True))
        assert changed, f"{name} round {r}: the model did not move"  # fmt: skip
        arrays = new


def test_an_empty_round_is_logged_and_stepped_over() -> None:
    """The replica's own contract, with known arrays: round 2 is empty, round 3 adds 1."""
    server = R.ReplicaServer([np.zeros(2, np.float32)], ("step",))
    server.commit(1, {"step": 1.0}, [np.ones(2, np.float32)], [FIRST_NODE])
    server.skip(2)
    server.commit(3, {"step": 1.0}, [np.full(2, 2.0, np.float32)], [])
    cfg, snapshot = server.downlink(FIRST_NODE + 1, 4)  # a node that holds round 0
    assert snapshot is None
    assert list(cfg[R.SKIPPED]) == [2] and "step-2" not in cfg
    assert cfg["step-1"] == 1.0 and cfg["step-3"] == 1.0

    def apply(state, t, fields):  # noqa: ANN001, ANN202
        return [(s + np.float32(fields["step"])).astype(np.float32) for s in state]

    state, held = R.catch_up(cfg, None, [np.zeros(2, np.float32)], 0, [2], apply, ("step",))
    assert held == 3 and state[0].tolist() == [2.0, 2.0]
    # A downlink that claims a skipped round outside what it covers is refused.
    cfg[R.SKIPPED] = [7]
    from pemn_fl.codec import MaskPayloadError

    with pytest.raises(MaskPayloadError, match="skipped rounds"):
        R.catch_up(cfg, None, [np.zeros(2, np.float32)], 0, [2], apply, ("step",))


def test_a_fault_free_downlink_has_no_skipped_key() -> None:
    """No empty round, no extra key: fault-free runs send exactly the bytes they did."""
    server = R.ReplicaServer([np.zeros(1, np.float32)], ("step",))
    server.commit(1, {"step": 1.0}, [np.ones(1, np.float32)], [])
    cfg, _ = server.downlink(FIRST_NODE, 2)
    assert R.SKIPPED not in cfg


def test_a_fedavg_that_never_trained_sets_no_target() -> None:
    """--drop-rate 1.0 used to report FedAvg 'reached the target with 0.000 MB': a target
    taken from the untrained model."""
    import pandas as pd

    from pemn_fl.report import COLUMNS, fedavg_target, summarize

    def rows(method: str, accuracies: list[float], replied: int) -> list[dict[str, object]]:
        return [{**{c: 0 for c in COLUMNS}, "method": method, "round": r, "accuracy": a,
                 "clients_replied": replied if r else 0, "uplink_bytes": 10 * r,
                 "downlink_bytes": 10 * r} for r, a in enumerate(accuracies)]  # fmt: skip

    lost = pd.DataFrame(rows("fedavg", [0.1, 0.1, 0.1], 0) + rows("pemn", [0.1, 0.3, 0.5], 2))
    assert fedavg_target(lost) is None
    summary = summarize(lost, level="message")
    assert summary["target_accuracy"] is None
    assert summary["methods"]["fedavg"]["bytes_to_target"] is None
    trained = pd.DataFrame(rows("fedavg", [0.1, 0.9, 0.8], 3))
    assert fedavg_target(trained) == pytest.approx(0.89)
