"""``--resume DIR``: a run killed with SIGKILL continues from its last finished round and ends
with the rounds.csv of a run that was never stopped; the checkpoint pieces on their own; and
the clear errors of a resume that cannot be done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from pemn_fl import checkpoint as C
from simulations.run import main

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--clients", "3", "--rounds", "5", "--methods", "pemn,evolve_dither,fedavg",
           "--local-epochs", "3", "--quiet"]  # fmt: skip


def test_client_states_newest_before_the_round_asked_and_only_the_last_two_kept(
    tmp_path: Path,
) -> None:
    for key in [(0, 1), (0, 2), (0, 3), (1, 1)]:
        state = RecordDict({"k": ConfigRecord({"key": f"{key}"}),
                            "w": ArrayRecord([np.full(3, key[1], dtype=np.float32)])})  # fmt: skip
        C.save_client(tmp_path, 4, key, state)
    names = sorted(p.name for p in (tmp_path / "clients" / "p4").iterdir())
    assert names == ["0-3.state", "1-1.state"]  # older files pruned
    # Resuming method 1 round 2: the state after (1, 1); round 1 of method 1: after (0, 3).
    assert C.load_client(tmp_path, 4, (1, 2))["k"]["key"] == "(1, 1)"
    loaded = C.load_client(tmp_path, 4, (1, 1))
    assert loaded["k"]["key"] == "(0, 3)" and loaded["w"].to_numpy_ndarrays()[0][0] == 3
    assert C.load_client(tmp_path, 4, (0, 1)) is None  # nothing before: a fresh node
    assert C.load_client(tmp_path, 9, (5, 5)) is None  # a partition that never trained


def test_node_keyed_state_follows_the_partitions_to_new_node_ids() -> None:
    from pemn_fl.methods.frames.replica import ReplicaServer

    class Strategy:
        def __init__(self) -> None:
            self.replica = ReplicaServer([np.zeros(2, dtype=np.float32)], ("update",))
            self.replica.holds = {111: 3, 222: 4}

    fresh = Strategy()
    saved = C.ServerCheckpoint("m", 0, 4, {}, C.strategy_state(Strategy(), static=[]),
                               node_of_partition={0: 111, 1: 222})  # fmt: skip
    C.restore_strategy(fresh, saved, node_of_partition={0: 9001, 1: 9002})
    assert fresh.replica.holds == {9001: 3, 9002: 4}


def test_only_rows_the_checkpoint_covers_are_kept(tmp_path: Path) -> None:
    csv = tmp_path / "rounds.csv"
    pd.DataFrame({"method": ["a", "a", "a", "b", "b", "b"], "round": [0, 1, 2, 0, 1, 2],
                  "cumulative_bytes": [0, 5, 9, 0, 7, 8]}).to_csv(csv, index=False)  # fmt: skip
    saved = C.ServerCheckpoint("b", 1, 1, {}, {}, {})
    rows = C.finished_rows(csv, ["a", "b"], saved, 2, ["method", "round", "cumulative_bytes"])
    assert [(r["method"], r["round"]) for r in rows] == [("a", 0), ("a", 1), ("a", 2),
                                                          ("b", 0), ("b", 1)]  # fmt: skip


def test_a_resume_that_cannot_be_done_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no readable config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps(
        {"clients": 3, "settings": {"num-server-rounds": 5}}))  # fmt: skip
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no checkpoint in it" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path), "--rounds", "9"]) == 2
    err = capsys.readouterr().err
    assert "drop --rounds" in err and err.count("\n") == 1


def _run(args: list[str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "simulations.run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)  # type: ignore[call-overload]  # fmt: skip


def _alive_in_session(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,args="], capture_output=True,
                         text=True).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.mark.slow
def test_killed_run_resumes_to_the_rounds_of_an_uninterrupted_one(tmp_path: Path) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    proc = _run([*OPTIONS, "--out", str(clean)])
    assert proc.wait(600) == 0, proc.stdout.read()[-3000:]

    # The same run, killed with SIGKILL once evolve_dither's round 2 is on disk (pemn is
    # finished by then, fedavg not started): the resume crosses a method boundary too.
    proc = _run([*OPTIONS, "--out", str(killed)], start_new_session=True)
    deadline = time.monotonic() + 600
    csv = killed / "rounds.csv"
    while not (csv.exists() and "evolve_dither,2," in csv.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before round 2"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "fedavg" not in csv.read_text()

    # Ray's helpers started by the killed run die with it (kernel fate-sharing), the last
    # agents within a minute: nothing of the run outlives it.
    gone_by = time.monotonic() + 90
    while _alive_in_session(proc.pid) and time.monotonic() < gone_by:
        time.sleep(1)
    assert _alive_in_session(proc.pid) == []

    resumed = _run(["--resume", str(killed), "--quiet"])
    assert resumed.wait(600) == 0, resumed.stdout.read()[-3000:]
    a, b = (pd.read_csv(d / "rounds.csv") for d in (clean, killed))
    assert list(a["method"]) == list(b["method"]) and list(a["round"]) == list(b["round"])
    same = [c for c in a.columns if c not in ("wall_s", "uplink_bytes", "downlink_bytes",
                                              "uplink_wire_bytes", "downlink_wire_bytes",
                                              "cumulative_bytes")]  # fmt: skip
    for col in same:
        assert list(a[col]) == pytest.approx(list(b[col]), abs=0, nan_ok=True), col
    # Message and wire bytes carry Flower's random run and node ids (varints): a few bytes
    # per message apart. On the wire the ids are in every HTTP call, and a message of many
    # objects (FedAvg's arrays) is many calls: up to 1e-4 of the bytes more. A call gained or
    # lost would cost its headers (over 900 bytes, pemn_fl/wire_constants.json), far above.
    messages = a["clients_sampled"] * 2
    for col in ("uplink_bytes", "downlink_bytes"):
        assert ((a[col] - b[col]).abs() <= 8 * messages).all(), col
    for col in ("uplink_wire_bytes", "downlink_wire_bytes"):
        bound = 8 * messages + 1e-4 * a[col]
        assert (bound < 900).all() and ((a[col] - b[col]).abs() <= bound).all(), col
    assert json.loads((killed / "summary.json").read_text())["methods"]["fedavg"]["rounds"] == 5
