"""``bench.wire_tls``'s report: whole-deployment and per-method spans from the two runs'
files (the deployments themselves are what ``test_deploy.py`` checks, slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench import wire_tls as W


def fake_run(directory: Path, timeline: list[tuple[str, int, float, int, int, int]],
             wire_rows: dict[str, tuple[int, int]] | None = None) -> Path:  # fmt: skip
    """A run directory as ``simulations.deploy`` leaves it, with the given proxy totals."""
    directory.mkdir(parents=True)
    last = timeline[-1]
    proxy = {"level": "tls" if wire_rows is None else "http", "node_to_link": last[3] + 10,
             "link_to_node": last[4] + 20, "connections": last[5] + 1}  # fmt: skip
    (directory / "summary.json").write_text(json.dumps({"wire": {"proxy": proxy}}))
    with (directory / "wire-timeline.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "round", "seconds", "node_to_link", "link_to_node", "connections"])
        w.writerows(timeline)
    with (directory / "rounds.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "round", "uplink_wire_bytes", "downlink_wire_bytes"])
        for method, (up, down) in (wire_rows or {}).items():
            w.writerow([method, 0, 0, 0])
            w.writerow([method, 1, up, down])
    return directory


def test_spans_and_ratios_come_from_the_rows_timeline(tmp_path: Path) -> None:
    # (method, round, seconds, node_to_link, link_to_node, connections) as rows appeared.
    clear = fake_run(tmp_path / "clear", [
        ("pemn", 0, 10, 1000, 5000, 3), ("pemn", 1, 30, 1600, 5300, 6),
        ("fedavg", 0, 30, 1600, 5300, 6), ("fedavg", 1, 60, 9600, 13300, 9),
    ], wire_rows={"pemn": (400, 200), "fedavg": (7000, 7500)})  # fmt: skip
    tls = fake_run(tmp_path / "tls", [
        ("pemn", 0, 12, 1100, 6000, 3), ("pemn", 1, 30, 2000, 7500, 6),
        ("fedavg", 0, 30, 2000, 7500, 6), ("fedavg", 1, 58, 10100, 15600, 8),
    ])  # fmt: skip
    text, data = W.report(clear, tls, {"cleartext": 70.0, "tls": 65.0})
    spans = data["spans"]
    assert spans["cleartext"]["pemn"] == {"node_to_link": 600, "link_to_node": 300,
                                          "connections": 3, "seconds": 20}  # fmt: skip
    assert spans["tls"]["fedavg"]["node_to_link"] == 8100
    assert spans["tls"]["fedavg"]["connections"] == 2
    whole = data["whole"]
    assert whole["cleartext"]["node_to_link"] == 9610 and whole["tls"]["link_to_node"] == 15620
    assert "| pemn | 600 | 900 | 1.500x | 300 | 1,500 | 5.000x | 3 / 3 | 20 / 18 |" in text
    assert "pemn 600 B (67 %)" in text  # the parsed round calls' share of the cleartext span
    assert data["parsed_rounds_cleartext"]["fedavg"] == {"uplink": 7000, "downlink": 7500}


def test_report_only_without_runs_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert W.main(["--report-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --report-only") and err.count("\n") == 1
