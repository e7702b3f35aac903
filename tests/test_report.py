"""Round log, summary arithmetic and the figure, on hand-built numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pemn_fl.accounting import Traffic
from pemn_fl.report import COLUMNS, RoundLog, plot_runs, summarize, summary_table


def _traffic(up: int, down: int, n: int = 2) -> Traffic:
    return Traffic(
        uplink_payload_bytes=up - 10 * n, downlink_payload_bytes=down - 10 * n,
        uplink_bytes=up, downlink_bytes=down, messages_down=n, messages_up=n,
        uplink_wire_bytes=3.0 * up, downlink_wire_bytes=3.0 * down,
    )  # fmt: skip


def _book(path: Path | None = None) -> RoundLog:
    book = RoundLog(params={"pemn": 1000, "fedavg": 1000}, path=path)
    for method, per_round, accs in (
        ("pemn", (100, 50), [0.1, 0.5, 0.8, 0.85]),
        ("fedavg", (8000, 8000), [0.1, 0.7, 0.86, 0.9]),
    ):
        for r, acc in enumerate(accs):
            traffic = Traffic() if r == 0 else _traffic(*per_round)
            book.add(method, r, traffic, sampled=2 if r else 0, rejected=0, accuracy=acc,
                     loss=1.0, wall_s=0.1)  # fmt: skip
    return book


def test_rows_are_appended_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "rounds.csv"
    book = _book(path)
    on_disk = pd.read_csv(path)
    assert list(on_disk.columns) == COLUMNS
    assert len(on_disk) == 8
    assert on_disk["cumulative_bytes"].tolist() == book.frame()["cumulative_bytes"].tolist()
    assert on_disk["cumulative_bytes"].tolist()[:4] == [0, 150, 300, 450]
    # bits per param per client message: 8 * (100 - 20) / (1000 * 2)
    assert on_disk["uplink_bits_per_param"].iloc[1] == pytest.approx(0.32)


def test_summary_target_ratio_and_reverse_question() -> None:
    s = summarize(_book().frame(), setup_bytes=77, level="message")
    assert s["target_accuracy"] == pytest.approx(0.89)
    assert s["methods"]["fedavg"]["bytes_to_target"] == 48000  # reached in round 3
    assert s["methods"]["pemn"]["bytes_to_target"] is None
    assert s["ratio_vs_fedavg"] is None and s["headline_method"] == "pemn"
    best = s["at_best"]
    assert best["accuracy"] == 0.85 and best["method"] == "pemn"
    # FedAvg passes 0.85 in round 2 (0.86).
    assert best["method_bytes"] == 450 and best["fedavg_bytes"] == 32000
    assert best["ratio"] == pytest.approx(32000 / 450)
    assert s["setup_bytes"] == 77
    text = summary_table(s)
    assert "never" in text and "0.890" in text


def test_ratio_when_pemn_reaches_the_target() -> None:
    frame = _book().frame()
    frame.loc[(frame["method"] == "pemn") & (frame["round"] == 3), "accuracy"] = 0.95
    s = summarize(frame, level="message")
    assert s["methods"]["pemn"]["bytes_to_target"] == 450
    assert s["ratio_vs_fedavg"] == pytest.approx(48000 / 450)
    assert s["methods"]["pemn"]["fewer_bytes_than_fedavg_to_target"] == pytest.approx(48000 / 450)
    assert "FedAvg needed 106.7x more bytes" in summary_table(s)


def test_table_when_the_best_accuracy_was_the_initial_models() -> None:
    # Every round of pemn lost (e.g. all stragglers): its best is round 0, at 0 bytes.
    frame = _book().frame()
    frame.loc[(frame["method"] == "pemn") & (frame["round"] > 0), "accuracy"] = 0.05
    s = summarize(frame, level="message")
    best = s["at_best"]
    assert best["accuracy"] == 0.1 and best["method_bytes"] == 0 and best["ratio"] is None
    assert best["fedavg_bytes"] == 0  # FedAvg's round 0 had it too
    assert "it sent 0.000 MB, FedAvg 0.000 MB\n" in summary_table(s) + "\n"


def test_byte_levels_wire_by_default_payload_and_message_on_request() -> None:
    frame = _book().frame()
    wire, payload = summarize(frame), summarize(frame, level="payload")
    assert wire["bytes_level"] == "wire" and payload["bytes_level"] == "payload"
    assert wire["methods"]["fedavg"]["bytes_to_target"] == 3 * 48000
    assert wire["methods"]["pemn"]["total_bytes"] == 3 * 450
    assert wire["methods"]["pemn"]["uplink_wire_bytes"] == 3 * 300
    # payload: every round sends (100 - 20) + (50 - 20) bytes
    assert payload["methods"]["pemn"]["total_bytes"] == 3 * 110
    assert "wire level" in summary_table(wire) and "payload level" in summary_table(payload)
    # A rounds.csv from before the wire level: its summary says it used message bytes.
    old = frame.drop(columns=["uplink_wire_bytes", "downlink_wire_bytes"])
    assert summarize(old)["bytes_level"] == "message"
    with pytest.raises(ValueError, match="unknown byte level"):
        summarize(frame, level="bits")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _book().write(run / "rounds.csv")
    out = plot_runs([run], tmp_path / "fig.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replied_rejected_and_failed_are_told_apart() -> None:
    # 5 sampled: 3 messages carry an update (one refused), 1 error reply (a dead node),
    # 1 never answered. The strategy's own count of refused replies includes the error reply.
    traffic = Traffic(uplink_payload_bytes=300, uplink_bytes=400, messages_up=4,
                      error_replies=1, messages_down=5, downlink_payload_bytes=50,
                      downlink_bytes=100)  # fmt: skip
    book = RoundLog(params={"pemn": 100})
    row = book.add("pemn", 1, traffic, sampled=5, rejected=2, accuracy=0.5, loss=1.0, wall_s=1)
    assert (row["clients_replied"], row["clients_rejected"], row["clients_failed"]) == (2, 1, 2)
    # Bits per parameter per client message that carried an update (3), not per error reply.
    assert row["uplink_bits_per_param"] == pytest.approx(8 * 300 / (100 * 3))


def test_target_is_fedavgs_best_round_not_its_last() -> None:
    # FedAvg peaks in round 1 (0.9) and falls back to 0.8: the target is 0.9 - 1 pt = 0.89,
    # and FedAvg reached it with round 1's cumulative bytes (2 * 8000 at the message level).
    book = RoundLog(params={"pemn": 1000, "fedavg": 1000})
    for method, accs in (("pemn", [0.1, 0.5, 0.6]), ("fedavg", [0.1, 0.9, 0.8])):
        for r, acc in enumerate(accs):
            book.add(method, r, Traffic() if r == 0 else _traffic(8000, 8000),
                     sampled=2 if r else 0, rejected=0, accuracy=acc, loss=1.0,
                     wall_s=0.1)  # fmt: skip
    s = summarize(book.frame(), level="message")
    assert s["target_accuracy"] == pytest.approx(0.89)
    assert s["methods"]["fedavg"]["bytes_to_target"] == 16000
    assert s["methods"]["fedavg"]["best_accuracy"] == 0.9
    assert s["methods"]["fedavg"]["final_accuracy"] == 0.8
