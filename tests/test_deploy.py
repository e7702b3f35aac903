"""The Deployment Engine path: ``python -m simulations.deploy`` starts a real SuperLink and
three SuperNodes on 127.0.0.1, and the run gives the simulator's accuracies and payload
bytes. Slow (real processes polling each other): ``pytest -m slow``; CI runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--rounds", "2", "--methods", "pemn,fedavg", "--dataset", "synthetic", "--model", "mlp",
           "--width", "0.5", "--dense-width", "0.5", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_deployment_matches_the_simulator(tmp_path: Path) -> None:
    deployed, simulated = tmp_path / "deployed", tmp_path / "simulated"
    for module, count, out in (("simulations.deploy", ["--nodes", "3"], deployed),
                               ("simulations.run", ["--clients", "3"], simulated)):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", module, *count, *OPTIONS, "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = (pd.read_csv(d / "rounds.csv") for d in (deployed, simulated))
    assert list(a["method"]) == list(b["method"]) and list(a["round"]) == list(b["round"])
    for col in ("accuracy", "uplink_payload_bytes", "downlink_payload_bytes", "clients_replied"):
        assert list(a[col]) == pytest.approx(list(b[col]), abs=1e-9), col
    assert (deployed / "config.json").exists() and (deployed / "logs" / "superlink.log").exists()
    # Bytes on the wire: the simulator's transport model within 5 % of what the proxy
    # measured on the real SuperLink, per method and direction (issue #8's target).
    summary = json.loads((deployed / "summary.json").read_text())
    assert summary["wire"]["source"].startswith("measured")
    assert summary["wire"]["bundle_bytes"] > 0 and summary["wire"]["unparsed_bytes"] == 0
    for method in ("pemn", "fedavg"):
        for direction in ("uplink", "downlink"):
            col = f"{direction}_wire_bytes"
            measured = a[a["method"] == method][col].sum()
            modelled = b[b["method"] == method][col].sum()
            in_run = summary["wire"]["model"][method][col]
            assert abs(modelled - measured) <= 0.05 * measured, (method, col, modelled, measured)
            assert abs(in_run - measured) <= 0.05 * measured, (method, col, in_run, measured)
            assert measured > a[a["method"] == method][f"{direction}_bytes"].sum()


@pytest.mark.slow
def test_a_supernode_killed_mid_run_does_not_stop_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "simulations.deploy", "--nodes", "3", "--rounds", "3",
           "--methods", "pemn", "--dataset", "synthetic", "--width", "0.5", "--quiet",
           "--kill-node-after", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3]  # every round ran
    after = rounds[rounds["round"] >= 2]
    # The dead node's failure is recorded in every later round; the other two still count.
    assert (after["clients_failed"] == 1).all() and (after["clients_replied"] == 2).all()
    assert (after["clients_rejected"] == 0).all()
    assert (after["uplink_payload_bytes"] > 0).all() and after["accuracy"].notna().all()
