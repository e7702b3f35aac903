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
    from pemn_fl.methods.frames.replica import ReplicaServer

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


def test_load_server_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    import pickle

    import pytest

    with pytest.raises(C.CheckpointError, match="no checkpoint"):
        C.load_server(tmp_path)
    from pemn_fl import framing

    (tmp_path / C.SERVER_FILE).write_bytes(b"\x80\x05garbage")
    with pytest.raises(C.CheckpointError, match="damaged checkpoint"):
        C.load_server(tmp_path)
    (tmp_path / C.SERVER_FILE).write_bytes(framing.seal(b"\x80\x05garbage"))  # sealed, bad
    with pytest.raises(C.CheckpointError, match="unreadable checkpoint"):
        C.load_server(tmp_path)
    (tmp_path / C.SERVER_FILE).write_bytes(framing.seal(pickle.dumps({"method": "pemn"})))
    with pytest.raises(C.CheckpointError, match="not a pemn-fl checkpoint"):
        C.load_server(tmp_path)
    saved = C.ServerCheckpoint("pemn", 1, 4, {"a": np.arange(3)}, {"x": 1}, {0: 7})
    C.save_server(tmp_path, saved)
    back = C.load_server(tmp_path)
    assert (back.method, back.method_index, back.round, back.node_of_partition) == (
        "pemn", 1, 4, {0: 7})  # fmt: skip
    assert back.arrays["a"].tolist() == [0, 1, 2] and back.strategy == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == [C.SERVER_FILE]  # no temporary left


def test_strategy_state_leaves_out_the_static_attributes_by_identity() -> None:
    class Strategy:
        def __init__(self, sampler: object, data: object) -> None:
            self.sampler, self.data, self.round, self.copy = sampler, data, 3, list(data)

    data = [1, 2]
    state = C.strategy_state(Strategy("s", data), static=["s", data])
    assert state == {"round": 3, "copy": [1, 2]}  # an equal copy is kept, the object is not


def test_arrays_round_trip_through_a_record_by_name() -> None:
    arrays = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "b": np.ones(1)}
    back = C.arrays_of(C.record_of(arrays))
    assert list(back) == ["w", "b"]
    assert back["w"].tolist() == [[0, 1], [2, 3]] and back["b"].dtype == np.float64


def test_node_ids_are_translated_three_levels_down_and_unknown_ids_dropped() -> None:
    class Holder:
        def __init__(self, inner: object = None) -> None:
            self.table = {11: "a", 12: "b"}
            self.inner = inner

        def remap_nodes(self, new_node_of_old: dict[int, int]) -> None:
            self.table = C.translate_keys(self.table, new_node_of_old)

    deep = Holder(Holder(Holder(Holder(Holder()))))  # levels 0..4
    C.remap_nodes(deep, {11: 911})
    assert deep.table == {911: "a"}  # node 12 is gone from the new run: dropped
    assert deep.inner.table == deep.inner.inner.table == deep.inner.inner.inner.table == {
        911: "a"}  # fmt: skip
    assert deep.inner.inner.inner.inner.table == {11: "a", 12: "b"}  # past depth 3: untouched
    C.remap_nodes(Holder, {11: 911})  # a class is not an instance: nothing to translate
    assert C.translate_keys({1: "x", 2: "y"}, {1: 10, 2: 20, 3: 30}) == {10: "x", 20: "y"}


def test_resumed_strategy_shows_the_inner_one_the_runs_true_rounds() -> None:
    calls = []

    class Inner:
        def configure_train(self, r, arrays, config, grid):  # noqa: ANN001, ANN202
            calls.append(("configure_train", r, arrays, config, grid))
            return ["m"]

        def aggregate_train(self, r, replies):  # noqa: ANN001, ANN202
            calls.append(("aggregate_train", r, replies))
            return "arrays", "metrics"

        def configure_evaluate(self, r, arrays, config, grid):  # noqa: ANN001, ANN202
            calls.append(("configure_evaluate", r, arrays, config, grid))
            return []

        def aggregate_evaluate(self, r, replies):  # noqa: ANN001, ANN202
            calls.append(("aggregate_evaluate", r, replies))
            return "evaluated"

        def summary(self) -> None:
            calls.append(("summary",))

    resumed = C.ResumedStrategy(Inner(), offset=4)  # type: ignore[arg-type]
    assert resumed.configure_train(1, "A", "C", "G") == ["m"]  # type: ignore[arg-type]
    assert resumed.aggregate_train(2, ["r"]) == ("arrays", "metrics")  # type: ignore[list-item]
    assert resumed.configure_evaluate(3, "A", "C", "G") == []  # type: ignore[arg-type]
    assert resumed.aggregate_evaluate(1, ["e"]) == "evaluated"  # type: ignore[list-item]
    resumed.summary()
    assert calls == [("configure_train", 5, "A", "C", "G"), ("aggregate_train", 6, ["r"]),
                     ("configure_evaluate", 7, "A", "C", "G"), ("aggregate_evaluate", 5, ["e"]),
                     ("summary",)]  # fmt: skip


def test_client_files_sort_by_method_then_round_numerically(tmp_path: Path) -> None:
    from flwr.app import ConfigRecord, RecordDict

    for key in [(0, 9), (0, 10), (1, 2)]:
        C.save_client(tmp_path, 0, key, RecordDict({"k": ConfigRecord({"key": str(key)})}))
    folder = tmp_path / C.CLIENT_DIR / "p0"
    # Round 10 sorts after round 9 (numbers, not text), so 0-9 was the one pruned.
    assert sorted(p.name for p in folder.iterdir()) == ["0-10.state", "1-2.state"]
    (folder / "notes.txt").write_text("not a state file")
    assert C.load_client(tmp_path, 0, (1, 0))["k"]["key"] == "(0, 10)"
    assert C.load_client(tmp_path, 0, (9, 9))["k"]["key"] == "(1, 2)"


def test_a_rounds_csv_missing_a_covered_round_names_it(tmp_path: Path) -> None:
    import pytest

    columns = ["method", "round", "accuracy"]
    csv = tmp_path / "rounds.csv"
    csv.write_text("method,round,accuracy\na,0,0.1\na,2,0.3\n")  # round 1 of a is missing
    saved = C.ServerCheckpoint("a", 0, 2, {}, {}, {})
    with pytest.raises(C.CheckpointError, match=r"e\.g\. \[\('a', 1\)\]"):
        C.finished_rows(csv, ["a"], saved, 2, columns)
    csv.write_text("method,round,accuracy\na,0,0.1\na,1,0.2\na,2,0.3\n")
    rows = C.finished_rows(csv, ["a"], saved, 2, columns)
    assert [(r["method"], r["round"], r["accuracy"]) for r in rows] == [
        ("a", 0, 0.1), ("a", 1, 0.2), ("a", 2, 0.3)]  # fmt: skip
