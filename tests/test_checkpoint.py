"""Checkpoint pieces on known answers: what a resumed run's strategy holds after the restore.

``tests/test_resume.py`` kills and resumes real runs (slow) and checks node-id translation on
a strategy that already holds the saved state; here the fresh strategy holds round 0, as the
one a resumed run builds does, so a restore that skips an attribute is caught in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pemn_fl import checkpoint as C


def test_a_resumed_strategy_gets_the_saved_replica_not_a_fresh_one(tmp_path: Path) -> None:
    """The strategy a resumed run builds holds round 0; after the restore it must hold the
    saved round, state, update log and node table (node ids translated)."""
    from pemn_fl.replica import ReplicaServer

    class Strategy:
        def __init__(self) -> None:
            self.replica = ReplicaServer([np.zeros(2, dtype=np.float32)], ("update",))

    ran = Strategy()
    for r, state in ((1, [1.0, 2.0]), (2, [3.0, 4.0]), (3, [5.0, 6.0])):
        ran.replica.commit(r, {"update": b"u%d" % r},
                           [np.array(state, dtype=np.float32)], [111, 222])  # fmt: skip
    C.save_server(tmp_path, C.ServerCheckpoint(
        "m", 0, 3, {}, C.strategy_state(ran, static=[]), node_of_partition={0: 111, 1: 222}))
    fresh = Strategy()
    C.restore_strategy(fresh, C.load_server(tmp_path), node_of_partition={0: 9001, 1: 9002})
    replica = fresh.replica
    assert replica.round == 3 and replica.state[0].tolist() == [5.0, 6.0]
    assert replica.updates == {1: {"update": b"u1"}, 2: {"update": b"u2"},
                               3: {"update": b"u3"}}  # fmt: skip
    assert replica.holds == {9001: 2, 9002: 2}  # both replied in round 3: they hold round 2
    assert replica.digest == ran.replica.digest != ReplicaServer(
        [np.zeros(2, dtype=np.float32)], ("update",)).digest
