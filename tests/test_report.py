"""Round log, summary arithmetic and the figure, on hand-built numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pemn_fl.accounting import Traffic
from pemn_fl.figure import plot_runs
from pemn_fl.report import COLUMNS, RoundLog, summarize, summary_table


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


# -- known answers for the rest of the module ---------------------------------------------
def _big_book(path: Path | None = None) -> RoundLog:
    """pemn: 1 MB up + 0.25 MB down a round, best 0.7; fedavg: 4 + 4 MB a round, best 0.8."""
    book = RoundLog(params={"pemn": 1000, "fedavg": 1000}, path=path)
    for method, per_round, accs in (("pemn", (1_000_000, 250_000), [0.1, 0.6, 0.7]),
                                    ("fedavg", (4_000_000, 4_000_000), [0.1, 0.8, 0.75])):
        for r, acc in enumerate(accs):
            book.add(method, r, Traffic() if r == 0 else _traffic(*per_round),
                     sampled=2 if r else 0, rejected=0, accuracy=acc, loss=1.0,
                     wall_s=0.1)  # fmt: skip
    return book


def test_summary_table_text_by_hand() -> None:
    text = summary_table(summarize(_big_book().frame(), level="message"))
    header = ("method".ljust(42) + "final acc".rjust(10) + "best acc".rjust(10)
              + "uplink MB".rjust(11) + "downlink MB".rjust(13) + "total MB".rjust(11)
              + "MB to target".rjust(14))  # fmt: skip
    pemn = ("PEMN-FL (masks)".ljust(42) + "0.700".rjust(10) + "0.700".rjust(10)
            + "2.000".rjust(11) + "0.500".rjust(13) + "2.500".rjust(11) + "never".rjust(14))
    fedavg = ("FedAvg (dense floats)".ljust(42) + "0.750".rjust(10) + "0.800".rjust(10)
              + "8.000".rjust(11) + "8.000".rjust(13) + "16.000".rjust(11) + "8.000".rjust(14))
    assert text.split("\n") == [
        "bytes: message level (whole Flower messages, protobuf)",
        header, pemn, fedavg,
        "target accuracy (FedAvg best - 1 pt): 0.790",
        "PEMN-FL (masks) never reached the target",
        # pemn's best (0.7) took 2.5 MB (round 2); FedAvg passed 0.7 in round 1 (8 MB).
        "at the best accuracy of PEMN-FL (masks) (0.700): it sent 2.500 MB, FedAvg 8.000 MB "
        "(3.2x more)",
    ]  # fmt: skip


def test_summary_table_names_each_byte_level() -> None:
    frame = _big_book().frame()
    first = {level: summary_table(summarize(frame, level=level)).split("\n")[0]
             for level in ("payload", "wire")}  # fmt: skip
    assert first == {
        "payload": "bytes: payload level (the methods' payloads only)",
        "wire": "bytes: wire level (HTTP requests a Flower 1.42 deployment makes for them)",
    }


def test_summary_table_when_the_method_reaches_the_target_without_fedavg_ratio() -> None:
    # pemn reaches FedAvg's target but FedAvg needed 0 bytes for it (its round 0 had it):
    # "reached it", and no ratio.
    frame = _big_book().frame()
    frame.loc[frame["method"] == "fedavg", "accuracy"] = [0.9, 0.5, 0.5]
    frame.loc[frame["method"] == "pemn", "accuracy"] = [0.1, 0.95, 0.95]
    s = summarize(frame, level="message")
    assert s["methods"]["pemn"]["fewer_bytes_than_fedavg_to_target"] is None
    lines = summary_table(s).split("\n")
    assert "PEMN-FL (masks) reached it" in lines


def test_summary_by_hand_every_key() -> None:
    s = summarize(_big_book().frame(), setup_bytes=5, level="message")
    pemn, fedavg = s["methods"]["pemn"], s["methods"]["fedavg"]
    assert pemn == {
        "rounds": 2, "final_accuracy": 0.7, "best_accuracy": 0.7,
        "uplink_bytes": 2_000_000, "downlink_bytes": 500_000,
        "uplink_payload_bytes": 2 * (1_000_000 - 20), "downlink_payload_bytes": 2 * (250_000 - 20),
        "uplink_wire_bytes": 6_000_000, "downlink_wire_bytes": 1_500_000,
        "total_bytes": 2_500_000,
        # round 2 only (rounds after 1): 8 * (1e6 - 20) bytes / (1000 params * 2 messages)
        "median_uplink_bits_per_param_after_round_1": pytest.approx(8 * (1_000_000 - 20) / 2000),
        "bytes_to_target": None, "fewer_bytes_than_fedavg_to_target": None,
    }  # fmt: skip
    assert fedavg["bytes_to_target"] == 8_000_000 and "fewer_bytes_than_fedavg_to_target" \
        not in fedavg  # fmt: skip
    assert (fedavg["final_accuracy"], fedavg["best_accuracy"], fedavg["rounds"]) == (0.75, 0.8, 2)
    assert s["target_accuracy"] == pytest.approx(0.79)
    assert (s["headline_method"], s["ratio_vs_fedavg"], s["bytes_level"], s["setup_bytes"]) == (
        "pemn", None, "message", 5)  # fmt: skip
    assert s["at_best"] == {"method": "pemn", "accuracy": 0.7, "method_bytes": 2_500_000,
                            "fedavg_bytes": 8_000_000, "ratio": pytest.approx(3.2)}  # fmt: skip


def test_summary_without_fedavg_has_no_target_and_no_reverse_question() -> None:
    frame = _big_book().frame()
    s = summarize(frame[frame["method"] == "pemn"], level="message")
    assert s["target_accuracy"] is None and s["at_best"] is None
    assert s["ratio_vs_fedavg"] is None and s["headline_method"] == "pemn"
    assert s["methods"]["pemn"]["bytes_to_target"] is None
    assert "fewer_bytes_than_fedavg_to_target" not in s["methods"]["pemn"]
    assert "target accuracy" not in summary_table(s)
    only_fedavg = summarize(frame[frame["method"] == "fedavg"], level="message")
    assert only_fedavg["headline_method"] is None and only_fedavg["at_best"] is None


def test_a_row_by_hand_every_column() -> None:
    book = RoundLog(params={"pemn": 500})
    traffic = Traffic(uplink_payload_bytes=1000, downlink_payload_bytes=250, uplink_bytes=1100,
                      downlink_bytes=300, messages_down=4, messages_up=4, error_replies=0,
                      uplink_wire_bytes=2000.4, downlink_wire_bytes=600.6)  # fmt: skip
    row = book.add("pemn", 3, traffic, sampled=4, rejected=1, accuracy=0.5, loss=0.25,
                   wall_s=1.5, server_flops=12345)  # fmt: skip
    assert row == {
        "method": "pemn", "round": 3, "clients_sampled": 4, "clients_replied": 3,
        "clients_rejected": 1, "clients_failed": 0,
        "uplink_payload_bytes": 1000, "downlink_payload_bytes": 250,
        "uplink_bytes": 1100, "downlink_bytes": 300,
        "uplink_wire_bytes": 2000, "downlink_wire_bytes": 601, "cumulative_bytes": 1400,
        "uplink_bits_per_param": 8 * 1000 / (500 * 4),
        "downlink_bits_per_param": 8 * 250 / (500 * 4),
        "accuracy": 0.5, "loss": 0.25, "wall_s": 1.5, "server_flops": 12345,
    }  # fmt: skip
    # Round 0 (the initial model): no failures counted; no message: bits per param are NaN.
    row0 = RoundLog(params={"pemn": 500}).add("pemn", 0, Traffic(), sampled=0, rejected=0,
                                              accuracy=0.1, loss=2.0, wall_s=0.0)  # fmt: skip
    assert row0["clients_failed"] == 0 and row0["cumulative_bytes"] == 0
    assert row0["uplink_bits_per_param"] != row0["uplink_bits_per_param"]  # NaN
    # A method whose payload describes no parameter: NaN, not a division by zero.
    none = RoundLog(params={"x": 0}).add("x", 1, traffic, sampled=4, rejected=0, accuracy=0.1,
                                        loss=2.0, wall_s=0.0)  # fmt: skip
    assert none["uplink_bits_per_param"] != none["uplink_bits_per_param"]


def test_extend_takes_finished_rows_and_later_rows_continue_the_sum(tmp_path: Path) -> None:
    path = tmp_path / "rounds.csv"
    before = _big_book().rows[:2]  # pemn rounds 0 and 1 (cumulative 0, 1.25 MB)
    book = RoundLog(params={"pemn": 1000}, path=path)
    book.extend(before)
    assert pd.read_csv(path)["cumulative_bytes"].tolist() == [0, 1_250_000]
    book.add("pemn", 2, _traffic(1_000_000, 250_000), sampled=2, rejected=0, accuracy=0.7,
             loss=1.0, wall_s=0.1)  # fmt: skip
    on_disk = pd.read_csv(path)
    assert list(on_disk.columns) == COLUMNS  # one header, written by extend
    assert on_disk["cumulative_bytes"].tolist() == [0, 1_250_000, 2_500_000]
    RoundLog(params={}, path=tmp_path / "none.csv").extend([])
    assert not (tmp_path / "none.csv").exists()  # nothing to write


def test_a_timed_log_extended_by_a_resume_goes_on_summing_energy(tmp_path: Path) -> None:
    """A resumed ``--link`` run: the energy column continues from the finished rows' total
    (the time column is the round's own clock, which the resumed timeline carries)."""
    from pemn_fl.timeline import ClientTiming, RoundTiming

    def timing(r: int, start: float, joules: float) -> RoundTiming:
        client = ClientTiming(0, start, start + 1, start + 2, start + 3, start + 3, True,
                              radio_j=joules / 4, compute_j=3 * joules / 4)  # fmt: skip
        return RoundTiming(r, start, start + 3, start + 4, [client])

    first = RoundLog(params={"pemn": 1000}, timed=True)
    for r, (start, joules) in enumerate([(0.0, 0.0), (0.0, 8.0), (4.0, 12.0)]):
        first.add("pemn", r, _traffic(1000, 500), sampled=1, rejected=0, accuracy=0.5,
                  loss=1.0, wall_s=0.1, timing=timing(r, start, joules))  # fmt: skip
    path = tmp_path / "rounds.csv"
    resumed = RoundLog(params={"pemn": 1000}, path=path, timed=True)
    resumed.extend(first.rows[:2])  # killed after round 1 (8 J so far)
    row = resumed.add("pemn", 2, _traffic(1000, 500), sampled=1, rejected=0, accuracy=0.5,
                      loss=1.0, wall_s=0.1, timing=timing(2, 4.0, 12.0))  # fmt: skip
    assert row["cumulative_energy_j"] == first.rows[2]["cumulative_energy_j"] == 20.0
    assert row["cumulative_time_s"] == 8.0
    assert pd.read_csv(path)["cumulative_energy_j"].tolist() == [0.0, 8.0, 20.0]


def test_labels_and_markers_fall_back_for_unknown_methods() -> None:
    from pemn_fl.report import label_of, marker_of

    assert (marker_of("pemn"), marker_of("fedavg"), marker_of("gone")) == ("-o", "-s", "-^")
    assert label_of("gone") == "gone"


def test_read_rounds_refuses_what_simulations_run_never_wrote(tmp_path: Path) -> None:
    from pemn_fl.report import RoundsFileError, read_rounds

    cases = {"empty.csv": b"", "binary.csv": b"\xff\xfe\x00\x81garbage\x00",
             "cols.csv": b"method,round\npemn,0\n",
             "none.csv": b"method,round,cumulative_bytes,accuracy,uplink_bytes,downlink_bytes\n"
                         b"pemn,0,,0.5,0,0\n"}  # fmt: skip
    words = {"empty.csv": "not a rounds.csv", "binary.csv": "not a rounds.csv",
             "cols.csv": "lacks the column(s) cumulative_bytes, accuracy",
             "none.csv": "no complete round"}  # fmt: skip
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RoundsFileError, match=words[name].replace("(", r"\(").replace(
                ")", r"\)")):  # fmt: skip
            read_rounds(tmp_path / name)


def test_read_rounds_drops_a_torn_last_line_and_keeps_the_rest(tmp_path: Path) -> None:
    from pemn_fl.report import read_rounds

    path = tmp_path / "rounds.csv"
    _big_book(path)
    text = path.read_text()
    last = text.rstrip("\n").rindex("\n") + 1
    path.write_text(text[: last + len("fedavg,2,2")])  # a kill mid-write: 3 fields left
    frame = read_rounds(path)
    assert len(frame) == 5 and frame["round"].tolist() == [0, 1, 2, 0, 1]
    assert frame["accuracy"].dtype.kind == "f"


def test_plot_draws_each_method_in_mb_against_percent(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: drawn.append(self))  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    _big_book(run / "rounds.csv")
    (run / "summary.json").write_text('{"target_accuracy": 0.79}')
    plot_runs([run], tmp_path / "fig.png", level="message")
    ax = drawn[0].axes[0]
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["PEMN-FL (masks)", "FedAvg (dense floats)",
                      "target: FedAvg best - 1 pt (79.0%)"]  # fmt: skip
    pemn, fedavg, target = ax.get_lines()
    # Rounds with traffic only (round 0 has none), cumulative MB against accuracy in %.
    assert pemn.get_xdata().tolist() == [1.25, 2.5] and pemn.get_ydata().tolist() == [60, 70]
    assert fedavg.get_xdata().tolist() == [8.0, 16.0]
    assert list(target.get_ydata()) == [79.0, 79.0]
    assert (pemn.get_marker(), fedavg.get_marker()) == ("o", "s")
    assert ax.get_xscale() == "log" and "message level" in ax.get_xlabel()
    assert ax.get_ylabel() == "test accuracy (%)"


def test_plot_of_several_runs_tags_each_curve_and_draws_no_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib.figure

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: drawn.append(self))  # fmt: skip
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        _big_book(run / "rounds.csv")
        (run / "summary.json").write_text('{"target_accuracy": 0.79}')
        runs.append(run)
    plot_runs(runs, tmp_path / "fig.png", title="two")
    ax = drawn[0].axes[0]
    assert ax.get_legend_handles_labels()[1] == [
        "PEMN-FL (masks) [a]", "FedAvg (dense floats) [a]", "PEMN-FL (masks) [b]",
        "FedAvg (dense floats) [b]"]  # fmt: skip
    assert ax.get_title() == "two" and "wire level" in ax.get_xlabel()
    # wire bytes are 3x the message bytes in these rows
    assert ax.get_lines()[0].get_xdata().tolist() == [3.75, 7.5]


def test_a_run_of_one_round_counts_one_round() -> None:
    frame = _big_book().frame()
    s = summarize(frame[frame["round"] <= 1], level="message")
    assert s["methods"]["pemn"]["rounds"] == 1 and s["methods"]["fedavg"]["rounds"] == 1
    assert s["methods"]["pemn"]["median_uplink_bits_per_param_after_round_1"] is None


def test_the_table_tells_every_method_its_target_whatever_the_order() -> None:
    # FedAvg first in the run: the methods after it still get their line.
    frame = _big_book().frame()
    fedavg_first = pd.concat([frame[frame["method"] == "fedavg"], frame[frame["method"] == "pemn"]])
    lines = summary_table(summarize(fedavg_first, level="message")).split("\n")
    assert "PEMN-FL (masks) never reached the target" in lines
    assert not any(line.startswith("FedAvg (dense floats) never") for line in lines)


def test_a_timeline_folder_is_plotted_from_its_timeline_csv(tmp_path: Path) -> None:
    """``simulations.timeline`` writes ``timeline.csv`` (no rounds.csv): the figure reads
    it; a run folder with both reads its own rounds.csv."""
    from pemn_fl.figure import rounds_file

    post = tmp_path / "timeline-3g"
    post.mkdir()
    _big_book().write(post / "timeline.csv")
    assert rounds_file(post) == post / "timeline.csv"
    figure = plot_runs([post], tmp_path / "post.png")
    assert figure.stat().st_size > 10_000
    _big_book().write(post / "rounds.csv")
    assert rounds_file(post) == post / "rounds.csv"
