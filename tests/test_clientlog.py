"""``clients.csv`` and the work it records: calls one by one, FLOPs counted, rows checked.

The time model replays these rows, so what they hold is pinned here by hand: the calls'
encoding round-trips to the cent, a known layer's FLOPs are worked out, and a damaged file
is refused with its line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pemn_fl import clientlog as L
from pemn_fl import compute as F
from pemn_fl.accounting import ClientTraffic
from pemn_fl.transport import Call

WORK = L.Work(train_flops_per_example=300, epochs=2, examples={0: 10, 1: 20, 2: 5})


def _share(status: str = "replied") -> ClientTraffic:
    return ClientTraffic(
        down=[Call("pull-messages", 852.08, 444.0), Call("pull-object", 926.82, 212.0),
              Call("confirm-message-received", 940.24, 128.0)],
        up=[Call("push-messages", 1285.86, 478.0), Call("push-object", 263263.87, 130.0)],
        down_payload_bytes=8, up_payload_bytes=3076, down_catchup_payload_bytes=0,
        status=status)  # fmt: skip


def test_calls_round_trip_through_their_text_to_the_cent() -> None:
    calls = _share().down + _share().up
    text = L.encode_calls(calls)
    assert text.split()[0] == "pm:852.08+444"
    assert "so:263263.87+130" in text  # no precision lost on large objects
    assert L.decode_calls(text) == calls
    assert L.decode_calls("") == [] and L.decode_calls(float("nan")) == []
    for bad in ("xx:1+2", "pm:1", "pm:+2", "pm12"):
        with pytest.raises(ValueError):
            L.decode_calls(bad)


def test_rows_are_per_partition_with_sums_and_work_only_for_clients_that_trained() -> None:
    clients = {205: _share(), 201: _share("late"), 202: _share("error")}
    partition_of = {201: 1, 202: 2, 205: 0}
    rows = L.rows("m", 3, clients, partition_of, WORK)
    assert [r["partition"] for r in rows] == [0, 1, 2]
    first = rows[0]
    assert first["examples"] == 10 and first["train_flops"] == 300 * 10 * 2
    assert rows[1]["train_flops"] == 300 * 20 * 2  # late: it trained, its reply came too late
    assert rows[2]["train_flops"] == 0  # failed: its work is unknown
    assert first["down_calls"] == 3 and first["up_calls"] == 2
    assert first["down_request_bytes"] == round(852.08 + 926.82 + 940.24)
    assert first["down_response_bytes"] == 444 + 212 + 128
    assert first["up_request_bytes"] == round(1285.86 + 263263.87)
    assert L.decode_calls(first["up_calls_detail"]) == _share().up


def test_append_then_read_then_keep_only_the_resumed_rounds(tmp_path: Path) -> None:
    path = tmp_path / "clients.csv"
    partition_of = {10: 0, 11: 1}
    for r in (1, 2, 3):
        L.append(path, L.rows("m", r, {10: _share(), 11: _share()}, partition_of, WORK))
    frame = L.read(path)
    assert len(frame) == 6 and list(frame.columns) == L.COLUMNS
    assert frame["train_flops"].dtype == "int64"
    L.keep_rounds(path, {("m", 1), ("m", 2)})
    assert sorted(set(L.read(path)["round"])) == [1, 2]


@pytest.mark.parametrize(("column", "value", "says"), [
    ("status", "lost", "status 'lost'"),
    ("train_flops", "-5", "train_flops is not a count"),
    ("examples", "many", "examples is not a count"),
    ("down_calls_detail", "pm:85y.08+444", "down_calls_detail is not a list of calls"),
])  # fmt: skip
def test_a_damaged_clients_file_names_its_line(tmp_path: Path, column: str, value: str,
                                               says: str) -> None:  # fmt: skip
    path = tmp_path / "clients.csv"
    L.append(path, L.rows("m", 1, {10: _share(), 11: _share()}, {10: 0, 11: 1}, WORK))
    frame = L.read(path).astype({column: object})
    frame.loc[1, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(L.ClientsFileError, match=f"line 3: {says}"):
        L.read(path)
    path.write_text("method,round\nm,1\n")
    with pytest.raises(L.ClientsFileError, match="lacks the column"):
        L.read(path)


def test_a_resume_drops_a_row_the_kill_cut_short(tmp_path: Path) -> None:
    """The server checkpoint is written after a round's rows, so a row cut short by a kill
    belongs to a round the resume runs again: ``keep_rounds`` drops it (it raised, and the
    resumed ServerApp failed), while ``read`` alone still refuses it."""
    path = tmp_path / "clients.csv"
    L.append(path, L.rows("m", 1, {10: _share(), 11: _share()}, {10: 0, 11: 1}, WORK))
    path.write_text(path.read_text() + "m,2,0,repl")
    with pytest.raises(L.ClientsFileError):
        L.read(path)
    assert len(L.read(path, torn_ok=True)) == 2
    L.keep_rounds(path, {("m", 1)})
    assert list(L.read(path)["round"]) == [1, 1]


def test_forward_flops_of_known_layers_and_the_model_is_left_as_it_was() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False), nn.ReLU(),
                          nn.Linear(10, 3))  # fmt: skip
    model.train()
    # A multiply-add is 2 FLOPs: 2 * 64 * 10 + 2 * 10 * 3 (a bias add is not counted).
    assert F.forward_flops(model, (1, 8, 8)) == 2 * 64 * 10 + 2 * 10 * 3
    assert model.training
    conv = nn.Conv2d(1, 4, kernel_size=3, padding=1, bias=False)
    # Each of 4 x 8 x 8 outputs is 9 multiply-adds.
    assert F.forward_flops(conv, (1, 8, 8)) == 2 * 9 * 4 * 8 * 8
    assert F.train_flops(1000, examples=7, epochs=2) == 3 * 1000 * 7 * 2
    assert F.server_flops(1000, test_examples=50, parameters=100, replies=4) == (
        2 * 100 * 4 + 1000 * 50)


def test_counting_flops_does_not_touch_batchnorm_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    before = model[1].running_mean.clone()
    F.forward_flops(model, (1, 8, 8))
    assert torch.equal(model[1].running_mean, before)
