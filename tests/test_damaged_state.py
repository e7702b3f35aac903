"""``--resume`` reads back what an earlier run wrote; damaged files are one clear ``error:``
line, never a traceback, a silently rewritten column or a client starting over (issue 17)."""

from __future__ import annotations

import json
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
