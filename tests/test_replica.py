"""``replica`` on a toy method whose every answer is known by hand.

The method tests (``test_evolve``, ``test_zoo``, ``test_fedpm``) check that every party ends
up with the server's digest, which a bug made alike on both sides passes. Here the state is
two floats and a round's update is "add these two floats", so what each downlink must carry,
what a node must hold after catching up and what each refusal must say are written down.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from pemn_fl.codec import MaskPayloadError
from pemn_fl.methods.frames import replica as R
from tests.harness import context

pytestmark = pytest.mark.usefixtures("flower_identity")
FIELDS = ("update",)


def _vec(*values: float) -> list[np.ndarray]:
    return [np.array(values, dtype=np.float32)]


def _add(state: R.State, t: int, fields: Mapping[str, Any]) -> R.State:
    """The toy method's round: add the two float32 values the update carries."""
    step = np.frombuffer(bytes(fields["update"]), dtype="<f4")
    return [(state[0] + step).astype(np.float32)]


def _update(a: float, b: float) -> dict[str, bytes]:
    return {"update": np.array([a, b], dtype="<f4").tobytes()}


def _server(history: int | None = None) -> R.ReplicaServer:
    """Rounds 1-3 committed: +(1, 0), +(0, 2), +(3, 3); nodes 11 and 12 replied in round 3."""
    server = R.ReplicaServer(_vec(0, 0), FIELDS, history=history)
    state = _vec(0, 0)
    for t, (a, b), nodes in ((1, (1, 0), [11]), (2, (0, 2), [11]), (3, (3, 3), [11, 12])):
        state = _add(state, t, _update(a, b))
        server.commit(t, _update(a, b), state, nodes)
    return server


def test_digest_is_the_first_8_bytes_of_sha256_of_the_float32_state() -> None:
    expected = hashlib.sha256(np.array([1, 2], "<f4").tobytes() + np.array([3], "<f4").tobytes())
    assert R.digest([np.array([1.0, 2.0]), np.array([3])]) == expected.digest()[:8]
    assert R.digest(_vec(1, 2)) != R.digest(_vec(2, 1))


def test_commit_moves_the_state_the_log_and_what_the_replying_nodes_hold() -> None:
    server = _server()
    assert server.round == 3 and server.state[0].tolist() == [4.0, 5.0]
    assert server.digest == R.digest(_vec(4, 5))
    assert sorted(server.updates) == [1, 2, 3] and server.updates[2] == _update(0, 2)
    # A valid reply in round r proves the node held round r - 1.
    assert server.holds == {11: 2, 12: 2}


def test_downlink_carries_exactly_the_rounds_a_node_missed() -> None:
    server = _server()
    cfg, snapshot = server.downlink(11, 4)  # holds round 2: needs round 3
    assert snapshot is None
    assert dict(cfg) == {"server-round": 4, "from-round": 3, "digest": R.digest(_vec(4, 5)),
                         "update-3": _update(3, 3)["update"]}  # fmt: skip
    cfg, _ = server.downlink(99, 4)  # never seen: holds round 0, needs rounds 1-3
    assert cfg["from-round"] == 1
    assert sorted(k for k in cfg if k.startswith("update-")) == ["update-1", "update-2",
                                                                 "update-3"]  # fmt: skip
    fresh = R.ReplicaServer(_vec(0, 0), FIELDS)
    cfg, snapshot = fresh.downlink(11, 1)  # round 1: nothing to catch up on
    assert snapshot is None and dict(cfg) == {"server-round": 1, "from-round": 1,
                                              "digest": R.digest(_vec(0, 0))}  # fmt: skip


def test_past_the_history_a_node_gets_a_float32_snapshot() -> None:
    server = _server(history=2)  # only rounds 2 and 3 are kept
    assert sorted(server.updates) == [2, 3]
    cfg, snapshot = server.downlink(99, 4)  # needs round 1: gone
    assert snapshot is not None and cfg["from-round"] == 4
    assert [a.tolist() for a in snapshot.to_numpy_ndarrays()] == [[4.0, 5.0]]
    assert snapshot.to_numpy_ndarrays()[0].dtype == np.float32
    assert not any(k.startswith("update-") for k in cfg)
    cfg, snapshot = server.downlink(11, 4)  # holds round 2: round 3 is still logged
    assert snapshot is None and "update-3" in cfg


def test_messages_one_per_node_with_the_snapshot_only_where_needed() -> None:
    server = _server(history=2)
    sent = server.messages([11, 99], 4, "train.toy")
    assert [m.metadata.dst_node_id for m in sent] == [11, 99]
    assert all(m.metadata.message_type == "train.toy" for m in sent)
    assert R.SNAPSHOT not in sent[0].content.array_records
    assert R.SNAPSHOT in sent[1].content.array_records
    assert sent[0].content["config"]["update-3"] == _update(3, 3)["update"]


def test_an_empty_round_is_logged_and_stepped_over_by_catch_up() -> None:
    server = _server()
    server.skip(4)  # no valid reply in round 4: state and holds unchanged
    assert server.round == 4 and server.updates[4] is None
    assert server.state[0].tolist() == [4.0, 5.0] and server.holds == {11: 2, 12: 2}
    cfg, _ = server.downlink(11, 5)
    assert cfg[R.SKIPPED] == [4] and "update-3" in cfg and "update-4" not in cfg
    state, held = R.catch_up(cfg, None, _vec(1, 2), 2, [2], _add, FIELDS)
    assert held == 4 and state[0].tolist() == [4.0, 5.0]


def test_catch_up_replays_only_the_rounds_not_yet_applied() -> None:
    server = _server()
    cfg, _ = server.downlink(99, 4)  # rounds 1-3
    state, held = R.catch_up(cfg, None, _vec(0, 0), 0, [2], _add, FIELDS)
    assert held == 3 and state[0].tolist() == [4.0, 5.0]
    # The node already applied rounds 1-2 (its reply was lost): only round 3 is replayed.
    state, held = R.catch_up(cfg, None, _vec(1, 2), 2, [2], _add, FIELDS)
    assert held == 3 and state[0].tolist() == [4.0, 5.0]
    # A node already at round 3 replays nothing.
    state, held = R.catch_up(cfg, None, _vec(4, 5), 3, [2], _add, FIELDS)
    assert held == 3 and state[0].tolist() == [4.0, 5.0]


def test_catch_up_from_a_snapshot_takes_it_whole() -> None:
    server = _server(history=2)
    cfg, snapshot = server.downlink(99, 4)
    state, held = R.catch_up(cfg, snapshot, _vec(9, 9), 0, [2], _add, FIELDS)
    assert held == 3 and state[0].tolist() == [4.0, 5.0]
    # A snapshot's arrays are taken as flat layers whatever shape they came in (sizes fit).
    shaped = ArrayRecord([np.array([[4.0], [5.0]], np.float32)])
    state, held = R.catch_up(cfg, shaped, _vec(9, 9), 0, [2], _add, FIELDS)
    assert held == 3 and state[0].shape == (2,) and state[0].tolist() == [4.0, 5.0]
    wrong_size = ArrayRecord([np.zeros(3, np.float32)])
    with pytest.raises(MaskPayloadError, match="snapshot does not match"):
        R.catch_up(cfg, wrong_size, _vec(0, 0), 0, [2], _add, FIELDS)
    wrong_type = ArrayRecord([np.zeros(2, np.float64)])
    with pytest.raises(MaskPayloadError, match="snapshot does not match"):
        R.catch_up(cfg, wrong_type, _vec(0, 0), 0, [2], _add, FIELDS)


def test_catch_up_refuses_a_gap_a_wrong_digest_and_skipped_rounds_out_of_range() -> None:
    server = _server()
    cfg, _ = server.downlink(11, 4)  # from round 3: a node holding round 1 cannot use it
    with pytest.raises(MaskPayloadError, match="holds round 1, the updates start at round 3"):
        R.catch_up(cfg, None, _vec(1, 0), 1, [2], _add, FIELDS)
    with pytest.raises(MaskPayloadError, match="digest mismatch"):
        R.catch_up(cfg, None, _vec(1, 1), 2, [2], _add, FIELDS)  # not the server's round 2
    for skipped in ([2], [4]):  # outside from-round 3 .. target 3
        bad = ConfigRecord({**dict(cfg), R.SKIPPED: skipped})
        with pytest.raises(MaskPayloadError, match="skipped rounds"):
            R.catch_up(bad, None, _vec(1, 2), 2, [2], _add, FIELDS)


def test_load_gives_round_0_until_store_and_then_copies() -> None:
    ctx = context(0, 1)
    state, held = R.load(ctx, "toy", lambda: _vec(7, 7))
    assert held == 0 and state[0].tolist() == [7.0, 7.0]
    R.store(ctx, "toy", _vec(1, 2), 6)
    assert int(ctx.state["toy-round"]["round"]) == 6
    state, held = R.load(ctx, "toy", lambda: _vec(7, 7))
    assert held == 6 and state[0].tolist() == [1.0, 2.0]
    state[0][0] = 100.0  # the caller owns what load returns
    assert R.load(ctx, "toy", lambda: _vec(7, 7))[0][0].tolist() == [1.0, 2.0]
    assert R.load(ctx, "other", lambda: _vec(3, 3))[1] == 0


def test_an_empty_round_also_ages_the_log_and_the_round_after_it_can_be_the_first_needed() -> None:
    server = _server(history=2)  # rounds 2, 3 kept
    server.skip(4)  # the log keeps the last 2 rounds: 3 and the empty 4
    assert server.updates == {3: _update(3, 3), 4: None}
    cfg, snapshot = server.downlink(12, 5)  # holds round 2: needs 3 (logged) and 4 (empty)
    assert snapshot is None and cfg["from-round"] == 3 and cfg[R.SKIPPED] == [4]
    server.holds[13] = 3
    cfg, snapshot = server.downlink(13, 5)  # holds round 3: only the empty round 4 is missing
    assert snapshot is None and cfg["from-round"] == 4 and cfg[R.SKIPPED] == [4]
    state, held = R.catch_up(cfg, None, _vec(4, 5), 3, [2], _add, FIELDS)
    assert held == 4 and state[0].tolist() == [4.0, 5.0]


def test_catchup_bytes_are_the_missed_rounds_before_the_last_and_any_snapshot() -> None:
    server = _server(history=2)
    up_to_date, behind, far = server.messages([11, 12, 99], 4, "train.toy")
    # Node 11 holds round 2: round 3's update is what every participant needs, no catch-up.
    assert R.catchup_payload_bytes(up_to_date) == 0
    server = _server()
    _, behind, far = server.messages([11, 12, 99], 5, "train.toy")
    # Round 5: the last round is 4 (never committed here), so rounds 3 (node 12, holding
    # round 2) and 1-3 (node 99) are all catch-up: 8 bytes of float32 pair per round.
    assert R.catchup_payload_bytes(behind) == 8
    assert R.catchup_payload_bytes(far) == 3 * 8
    server = _server(history=2)
    (snap,) = server.messages([99], 4, "train.toy")
    assert R.catchup_payload_bytes(snap) == 2 * 4  # the float32 snapshot of the state
    # A message of another family (no "from-round") has no catch-up.
    other = Message(content=RecordDict({"config": ConfigRecord({"server-round": 4})}),
                    dst_node_id=11, message_type="train.x")  # fmt: skip
    assert R.catchup_payload_bytes(other) == 0


def _merge(first: int, made: list[tuple[int, Mapping[str, Any]]]) -> dict[str, bytes]:
    """The toy method's rounds add up: one update, the sum of theirs."""
    total = sum(np.frombuffer(bytes(fields["update"]), dtype="<f4") for _, fields in made)
    return {"update": np.asarray(total, dtype="<f4").tobytes()}


def test_a_merge_is_one_update_for_two_or_more_missed_rounds() -> None:
    server = _server()
    cfg, snapshot = server.downlink(99, 4, _merge)  # holds round 0: rounds 1-3 merged
    assert snapshot is None
    assert dict(cfg) == {"server-round": 4, "from-round": 1, "digest": R.digest(_vec(4, 5)),
                         "merged-update": _update(4, 5)["update"]}  # fmt: skip
    state, held = R.catch_up(cfg, None, _vec(0, 0), 0, [2], _add, FIELDS)
    assert held == 3 and state[0].tolist() == [4.0, 5.0]
    cfg, _ = server.downlink(11, 4, _merge)  # holds round 2: one round, nothing to merge
    assert "update-3" in cfg and not any(k.startswith(R.MERGED) for k in cfg)
    # The whole merged update counts as catch-up (it cannot be split by round).
    (msg,) = server.messages([99], 4, "train.toy", _merge)
    assert R.catchup_payload_bytes(msg) == 8


def test_a_merge_steps_over_empty_rounds_and_counts_only_rounds_with_an_update() -> None:
    server = _server()
    server.skip(4)
    cfg, _ = server.downlink(99, 5, _merge)  # rounds 1-3 and the empty 4: one update
    assert cfg["from-round"] == 1 and R.SKIPPED not in cfg and "merged-update" in cfg
    state, held = R.catch_up(cfg, None, _vec(0, 0), 0, [2], _add, FIELDS)
    assert held == 4 and state[0].tolist() == [4.0, 5.0]
    cfg, _ = server.downlink(12, 5, _merge)  # round 3 and the empty 4: one update, no merge
    assert cfg[R.SKIPPED] == [4] and "update-3" in cfg and "merged-update" not in cfg


def test_no_merge_for_a_node_that_got_a_downlink_the_server_saw_no_reply_to() -> None:
    server = _server()
    assert server.certain(99)
    server.messages([99], 4, "train.toy", _merge)  # its reply never comes: round 4 skipped
    server.skip(4)
    assert not server.certain(99)  # it may hold any round up to 3 now
    cfg, _ = server.downlink(99, 5, _merge)
    assert not any(k.startswith(R.MERGED) for k in cfg)
    state, held = R.catch_up(cfg, None, _vec(4, 5), 3, [2], _add, FIELDS)  # it had caught up
    assert held == 4 and state[0].tolist() == [4.0, 5.0]
    server.commit(5, _update(0, 0), _vec(4, 5), [99])  # its round-5 reply proves round 4
    assert server.certain(99)
    server.remap_nodes({99: 7})
    assert server.sent == {7: 4} and server.holds[7] == 4 and server.certain(7)


def test_catch_up_refuses_a_merged_update_it_cannot_apply_exactly() -> None:
    server = _server()
    cfg, _ = server.downlink(99, 4, _merge)  # rounds 1-3 merged, from round 0's state
    with pytest.raises(MaskPayloadError, match="merged update of rounds 1..3: this node holds "
                                               "round 1"):  # fmt: skip
        R.catch_up(cfg, None, _vec(1, 0), 1, [2], _add, FIELDS)
    renamed = ConfigRecord({**{k: v for k, v in cfg.items() if k != "merged-update"},
                            "merged-delta": cfg["merged-update"]})  # fmt: skip
    with pytest.raises(MaskPayloadError, match=r"fields \['delta'\], expected \['update'\]"):
        R.catch_up(renamed, None, _vec(0, 0), 0, [2], _add, FIELDS)


def test_a_checkpoint_from_before_merging_loads_with_no_downlink_unanswered() -> None:
    old = {k: v for k, v in _server().__dict__.items() if k != "sent"}
    server = R.ReplicaServer.__new__(R.ReplicaServer)
    server.__setstate__(old)
    assert server.sent == {} and server.certain(11) and server.holds == {11: 2, 12: 2}
