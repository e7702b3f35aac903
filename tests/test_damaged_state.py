"""``--resume`` reads back what an earlier run wrote; damaged files are one clear ``error:``
line, never a traceback, a silently rewritten column or a client starting over (issue 17)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from pemn_fl import checkpoint as C
from pemn_fl.config import RunSettings
from pemn_fl.report import COLUMNS
from simulations.run import main

SETTINGS = RunSettings(methods="pemn,fedavg", num_server_rounds=3, dataset="synthetic",
                       model="mlp", width=0.5, min_nodes=2)  # fmt: skip


def _row(method: str, r: int) -> list[str]:
    values = {c: "0" for c in COLUMNS}
    values.update(method=method, round=str(r), cumulative_bytes=str(1000 * r),
                  uplink_bits_per_param="" if r == 0 else "0.5", accuracy="0.5", loss="1.2",
                  wall_s="0.25")  # fmt: skip
    return [values[c] for c in COLUMNS]


def _run_dir(tmp_path: Path, lines: list[str] | None = None) -> Path:
    """A run killed after pemn's 3 rounds and fedavg's round 1, as simulations.run leaves it."""
    out = tmp_path / "run"
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True)
    config = {"clients": 2, "cpus_per_client": 1.0,
              "settings": {**SETTINGS.to_run_config(), "checkpoint-dir": str(ckpt)}}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config))
    C.save_server(ckpt, C.ServerCheckpoint("fedavg", 1, 1, {}, {}, {0: 1, 1: 2},
                                           settings=SETTINGS.to_run_config()))  # fmt: skip
    if lines is None:
        rows = [_row("pemn", r) for r in range(4)] + [_row("fedavg", r) for r in range(2)]
        lines = [",".join(COLUMNS)] + [",".join(row) for row in rows]
    (out / "rounds.csv").write_text("\n".join(lines) + "\n")
    return out


def _lines(tmp_path: Path) -> list[str]:
    return (_run_dir(tmp_path / "good") / "rounds.csv").read_text().splitlines()


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("damage, words", [
    (lambda lines: [*lines[:3], lines[3] + ",7,8", *lines[4:]], "fields where the header"),
    (lambda lines: [*lines[:2], lines[2].replace("pemn,1,", "pemn,one,", 1), *lines[3:]],
     "round='one' is not an integer"),
    (lambda lines: lines[:1], "does not hold exactly the finished rounds"),
    (lambda lines: [], "header is not this version's"),
    (lambda lines: ["a,b,c", *lines[1:]], "header is not this version's"),
    (lambda lines: lines[:-2] + lines[-1:], "does not hold exactly"),  # a covered row lost
    (lambda lines: [*lines, lines[1]], "does not hold exactly"),  # a row repeated
])  # fmt: skip
def test_a_damaged_rounds_csv_is_one_error_line(damage, words: str, tmp_path: Path,  # noqa: ANN001
                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = _run_dir(tmp_path, damage(_lines(tmp_path)))
    assert main(["--resume", str(out)]) == 2
    assert words in _error_line(capsys)


def test_a_torn_last_line_is_dropped_and_integers_stay_integers(tmp_path: Path) -> None:
    lines = _lines(tmp_path)
    torn = [*lines, _row("fedavg", 2)[0] + ",2,3,3,0,0,12"]  # a kill mid-write: cut short
    out = _run_dir(tmp_path, torn)
    saved = C.load_server(out / "checkpoint")
    rows = C.finished_rows(out / "rounds.csv", SETTINGS.method_list, saved, 3, COLUMNS)
    assert [(r["method"], r["round"]) for r in rows] == [
        ("pemn", 0), ("pemn", 1), ("pemn", 2), ("pemn", 3), ("fedavg", 0), ("fedavg", 1)]
    assert all(type(r[c]) is int for r in rows for c in C.INTEGER_COLUMNS if c in COLUMNS)
    assert rows[1]["cumulative_bytes"] == 1000 and rows[1]["accuracy"] == 0.5
    assert np.isnan(rows[0]["uplink_bits_per_param"])  # empty: a round without messages


def test_a_truncated_client_checkpoint_is_an_error_not_a_fresh_start(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _run_dir(tmp_path)
    ckpt = out / "checkpoint"
    state = RecordDict({"pemn-scores": ArrayRecord([np.arange(4000, dtype=np.float32)]),
                        "k": ConfigRecord({"round": 2})})  # fmt: skip
    C.save_client(ckpt, 0, (0, 2), state)
    path = ckpt / "clients" / "p0" / "0-2.state"
    assert C.load_client(ckpt, 0, (0, 3))["k"]["round"] == 2  # whole: loads
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(C.CheckpointError, match="damaged client checkpoint"):
        C.load_client(ckpt, 0, (0, 3))
    assert main(["--resume", str(out)]) == 2
    line = _error_line(capsys)
    assert "p0/0-2.state" in line and "damaged" in line


def test_a_damaged_server_checkpoint_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _run_dir(tmp_path)
    path = out / "checkpoint" / C.SERVER_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit: pickle would still load it, the CRC does not
    path.write_bytes(bytes(data))
    assert main(["--resume", str(out)]) == 2
    assert "damaged checkpoint (CRC mismatch" in _error_line(capsys)


@pytest.mark.parametrize("deployment", [False, True])
@pytest.mark.parametrize("written, hint", [("0123456789" * 4, True), ("a" * 40, False),
                                           ("unknown", False)])  # fmt: skip
def test_a_checkpoint_of_other_code_says_which_commit_can_resume_it(
    written: str, hint: bool, deployment: bool, tmp_path: Path,
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint pickles the classes of the code that wrote it: after they change, the
    error names the run's commit (from config.json) and how to resume with it, for
    ``simulations.run --resume`` and ``simulations.deploy --resume`` alike."""
    import simulations.outdir as O
    from pemn_fl import framing
    from simulations.deploy import main as deploy_main

    monkeypatch.setattr(O, "git_commit", lambda: "a" * 40)
    out = _resumable(tmp_path, deployment=deployment)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"versions": {"pemn-fl-commit": written}}))
    # A pickle naming a class its module no longer has (as a restructuring leaves it).
    gone = b"\x80\x04cpemn_fl.methods.evolve\nNetworkOfAnOlderCommit\n)\x81."
    server = out / ("state/superlink/checkpoint" if deployment else "checkpoint")
    (server / C.SERVER_FILE).write_bytes(framing.seal(gone))
    assert (deploy_main if deployment else main)(["--resume", str(out)]) == 2
    line = _error_line(capsys)
    assert "unreadable checkpoint" in line and "NetworkOfAnOlderCommit" in line
    assert ("written at commit 0123456, this code is aaaaaaa" in line) is hint
    assert ("git worktree add --detach ../pemn-0123456 0123456" in line) is hint


def test_an_emptied_or_flipped_client_checkpoint_is_refused(tmp_path: Path) -> None:
    """An empty file is a valid, empty protobuf: a client would silently start over."""
    ckpt = tmp_path / "checkpoint"
    state = RecordDict({"k": ConfigRecord({"round": 2})})
    C.save_client(ckpt, 0, (0, 2), state)
    path = ckpt / "clients" / "p0" / "0-2.state"
    whole = path.read_bytes()
    for spoiled in (b"", whole[:-1] + bytes([whole[-1] ^ 1])):
        path.write_bytes(spoiled)
        with pytest.raises(C.CheckpointError, match="damaged client checkpoint"):
            C.load_client(ckpt, 0, (0, 3))


# -- every node's newest state present, rounds.csv values checked (issue 25) ---------------
# Six partitions, 2 sampled per round (fraction 0.34, seed 0): rounds 1, 2, 3 sample
# [0, 5], [0, 2], [1, 5]; partitions 3 and 4 are never sampled. The run was killed in
# fedavg's round 3, after pemn's 3 rounds and fedavg's 2 (checkpoint: fedavg, round 2).
STATE = RunSettings(methods="pemn,fedavg", num_server_rounds=3, dataset="synthetic",
                    model="mlp", width=0.5, min_nodes=6, fraction=0.34, seed=0)  # fmt: skip
SAMPLED = {1: [0, 5], 2: [0, 2], 3: [1, 5]}
FAILED = {("fedavg", 2, 2)}  # partition 2 raised in fedavg's round 2: it saved no state


def _sampled(state: RunSettings) -> dict[int, list[int]]:
    """The partitions ``state``'s own sampler draws in rounds 1-3 (as the ServerApp does)."""
    from pemn_fl.sampling import RoundSampler

    sampler = RoundSampler({p: 100 + p for p in range(state.min_nodes)}, state.fraction,
                           state.seed, state.sampler, state.sticky_group,
                           state.sticky_change)  # fmt: skip
    return {r: sorted(sampler.partition_of[n] for n in sampler(r)) for r in (1, 2, 3)}


def _resumable(tmp_path: Path, deployment: bool = False, state: RunSettings = STATE) -> Path:
    """A killed run whose files all agree, as simulations.run (or simulations.deploy, whose
    node i keeps partition i's state in its own directory) leaves it."""
    from pemn_fl import clientlog

    out = tmp_path / "run"
    server = out / ("state/superlink/checkpoint" if deployment else "checkpoint")
    server.mkdir(parents=True)
    sampled = _sampled(state)
    assert state != STATE or sampled == SAMPLED
    settings = {**state.to_run_config(), "checkpoint-dir": "checkpoint" if deployment
                else str(server)}  # fmt: skip
    config = ({"engine": "deployment", "nodes": state.min_nodes, "settings": settings}
              if deployment else {"clients": state.min_nodes, "cpus_per_client": 1.0,
                                  "settings": settings})  # fmt: skip
    (out / "config.json").write_text(json.dumps(config))
    C.save_server(server, C.ServerCheckpoint("fedavg", 1, 2, {}, {},
                                             {p: 100 + p for p in range(state.min_nodes)},
                                             settings=state.to_run_config()))  # fmt: skip
    rows, clients = [], []
    done = [("pemn", 0, r) for r in range(4)] + [("fedavg", 1, r) for r in range(3)]
    for method, index, r in [*done, ("fedavg", 1, 3)]:  # round 3 of fedavg: cut short
        if (method, r) != ("fedavg", 3):
            rows.append(_row(method, r))
        for pid in sampled.get(r, []):
            status = "error" if (method, r, pid) in FAILED else "replied"
            clients.append({c: 0 for c in clientlog.COLUMNS} | {
                "method": method, "round": r, "partition": pid, "status": status,
                "down_calls_detail": "", "up_calls_detail": ""})  # fmt: skip
            if status == "replied":
                node = out / f"state/nodes/node-{pid}/checkpoint" if deployment else server
                C.save_client(node, pid, (index, r), RecordDict(
                    {f"{method}-k": ConfigRecord({"round": r})}))  # fmt: skip
    (out / "rounds.csv").write_text("\n".join([",".join(COLUMNS)]
                                              + [",".join(row) for row in rows]) + "\n")
    clientlog.append(out / "clients.csv", clients)
    text = (out / "clients.csv").read_text()
    (out / "clients.csv").write_text(text[:-40])  # the kill tore fedavg round 3's last row
    return out


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``execute`` and ``deploy`` replaced by recorders: a resume that passes its checks
    starts nothing here."""
    import simulations.deploy as D
    import simulations.fresh as F

    calls: list[object] = []
    monkeypatch.setattr(F, "execute", lambda *args, **kwargs: calls.append(args) or 0)
    monkeypatch.setattr(D, "deploy", lambda *args, **kwargs: calls.append(args))
    return calls


def test_a_run_whose_states_all_agree_resumes(tmp_path: Path, nothing_runs: list[object],
                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """The legitimate gaps are no error: partitions 3 and 4 were never sampled (no folder),
    partition 2 failed in its last round (its newest state is from the round before), the
    cut round's files and its torn clients.csv row are ignored."""
    out = _resumable(tmp_path)
    ckpt = out / "checkpoint" / "clients"
    assert not (ckpt / "p3").exists() and not (ckpt / "p4").exists()
    assert sorted(p.name for p in (ckpt / "p2").iterdir()) == ["0-2.state"]
    assert main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert len(nothing_runs) == 1


@pytest.mark.parametrize("damage, words", [
    (lambda ckpt: (ckpt / "p0" / "1-2.state").unlink(),
     "partition 0: last trained in round 2 of fedavg but"),
    (lambda ckpt: shutil.rmtree(ckpt / "p5"), "partition 5: last trained in round 1 of fedavg"),
    (lambda ckpt: (ckpt / "p1" / "0-3.state").unlink(), "partition 1: last trained in round 3 "
     "of pemn but"),
    (lambda ckpt: shutil.copy(ckpt / "p0" / "1-1.state", ckpt / "p2" / "1-1.state"),
     "a round it did not train in"),
    (lambda ckpt: shutil.copy(ckpt / "p0" / "1-1.state", ckpt / "p3" / "1-0.state")
     if (ckpt / "p3").mkdir() is None else None,
     "filed under round 0, because fedavg's training messages carry no server-round"),
])  # fmt: skip
def test_resume_refuses_a_missing_or_foreign_client_state_naming_the_partition(
    damage, words: str, tmp_path: Path, capsys: pytest.CaptureFixture,  # noqa: ANN001
    nothing_runs: list[object],
) -> None:
    """Finding 2 of issue 25: deleting a client's newest checkpoint, or its whole folder,
    and ``--resume`` gave exit 0; that partition then failed every later round ("cannot
    catch up: this node holds round 0") and the accuracy drifted (0.9711 vs 0.9644)."""
    out = _resumable(tmp_path)
    damage(out / "checkpoint" / "clients")
    assert main(["--resume", str(out)]) == 2
    line = _error_line(capsys)
    assert words in line and "start the run again" in line
    assert nothing_runs == []


@pytest.mark.parametrize("edit, words", [
    (lambda lines: [*lines[:3], lines[3].replace(",0.5,", ",nan,"), *lines[4:]],
     "line 4: accuracy=nan is not in [0, 1]"),
    (lambda lines: [*lines[:3], lines[3].replace(",0.5,", ",1.5,"), *lines[4:]],
     "line 4: accuracy=1.5 is not in [0, 1]"),
    (lambda lines: [*lines[:3], lines[3].replace(",2000,", ",-2000,"), *lines[4:]],
     "line 4: cumulative_bytes=-2000 is negative"),
    (lambda lines: [lines[0], lines[1], lines[3], lines[2], *lines[4:]],
     "line 3: round 2 of pemn where round 1 of pemn belongs"),
])  # fmt: skip
def test_resume_refuses_impossible_values_in_rounds_csv(
    edit, words: str, tmp_path: Path, capsys: pytest.CaptureFixture,  # noqa: ANN001
    nothing_runs: list[object],
) -> None:
    """An accuracy of ``nan`` in rounds.csv was accepted on resume (and carried into the
    resumed run's summary); so were 1.5, negative bytes and rounds out of order."""
    out = _resumable(tmp_path)
    lines = (out / "rounds.csv").read_text().splitlines()
    (out / "rounds.csv").write_text("\n".join(edit(lines)) + "\n")
    assert main(["--resume", str(out)]) == 2
    assert words in _error_line(capsys) and nothing_runs == []


@pytest.mark.parametrize("damage, words", [
    (lambda out: (out / "clients.csv").unlink(), "clients.csv: missing"),
    (lambda out: (out / "clients.csv").write_text("method,round\n"), "lacks the column"),
    (lambda out: (out / "clients.csv").write_text(
        (out / "clients.csv").read_text().replace("pemn,2,0,", "pemn,2,4,")),
     "round 2 of pemn lists partitions [2, 4] but the run's seeded sample is [0, 2]"),
])  # fmt: skip
def test_resume_needs_the_clients_file_that_says_who_trained(
    damage, words: str, tmp_path: Path, capsys: pytest.CaptureFixture,  # noqa: ANN001
    nothing_runs: list[object],
) -> None:
    out = _resumable(tmp_path)
    damage(out)
    assert main(["--resume", str(out)]) == 2
    assert words in _error_line(capsys) and nothing_runs == []


def test_the_check_follows_the_runs_own_sampler(
    tmp_path: Path, capsys: pytest.CaptureFixture, nothing_runs: list[object]
) -> None:
    """Under ``--sampler sticky`` the rounds' samples differ from the uniform draw (and from
    the sticky draw with the default ``--sticky-change``): the check asks the run's own
    sampler, with every one of its settings, so a sticky run resumes, and its last trainer's
    deleted state is still caught."""
    sticky = RunSettings(**{**STATE.__dict__, "sampler": "sticky", "min_nodes": 10,
                            "fraction": 0.5, "sticky_change": 3})  # fmt: skip
    sampled = _sampled(sticky)
    assert sampled != _sampled(RunSettings(**{**sticky.__dict__, "sampler": "uniform"}))
    assert sampled != _sampled(RunSettings(**{**sticky.__dict__, "sticky_change": 0}))
    out = _resumable(tmp_path, state=sticky)
    assert main(["--resume", str(out)]) == 0, capsys.readouterr().err
    # One that trained in fedavg's round 2, the last the checkpoint covers:
    last = next(p for p in sampled[2] if ("fedavg", 2, p) not in FAILED)
    (out / "checkpoint" / "clients" / f"p{last}" / "1-2.state").unlink()
    assert main(["--resume", str(out)]) == 2
    assert f"partition {last}: last trained in round 2 of fedavg" in _error_line(capsys)


def test_a_deployment_resume_checks_every_nodes_state_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture, nothing_runs: list[object]
) -> None:
    """``simulations.deploy --resume``: node i keeps partition i's state in its own
    directory; a missing one is the same one line, before any process starts."""
    from simulations.deploy import main as deploy_main

    out = _resumable(tmp_path, deployment=True)
    assert deploy_main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert len(nothing_runs) == 1
    (out / "state/nodes/node-0/checkpoint/clients/p0/1-2.state").unlink()
    assert deploy_main(["--resume", str(out)]) == 2
    assert "partition 0: last trained in round 2 of fedavg" in _error_line(capsys)
    assert len(nothing_runs) == 1
