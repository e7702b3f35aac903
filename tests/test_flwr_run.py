"""The apps as a normal Flower app: ``flwr run .`` on a local SuperLink (Simulation Runtime).

Uses a throw-away FLWR_HOME and stops the detached SuperLink it starts, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # a real kernel / a real flwr run: the slow suite

ROOT = Path(__file__).resolve().parents[1]


def _superlink_pids(home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"flower-superlink.*{home}"], capture_output=True,
                         text=True).stdout  # fmt: skip
    return [int(p) for p in out.split()]


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep to stop the SuperLink")
def test_flwr_run_local_simulation(tmp_path: Path) -> None:
    app, home = tmp_path / "app", tmp_path / "flwr-home"
    app.mkdir()
    home.mkdir()
    shutil.copytree(ROOT / "pemn_fl", app / "pemn_fl",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, app / name)
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        "flwr", "run", ".", "local", "--stream",
        "--run-config", 'num-server-rounds=2 dataset="synthetic" width=0.5 dense-width=0.5',
        "--federation-config", "num-supernodes=3",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=app, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for pid in _superlink_pids(home):
            os.kill(pid, signal.SIGTERM)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "results written to" in output, output[-4000:]
    runs = list((app / "results" / "runs").glob("flwr-*"))
    assert len(runs) == 1
    rounds = pd.read_csv(runs[0] / "rounds.csv")
    assert set(rounds["method"]) == {"evolve", "fedavg"}  # the app config's default
    assert rounds.groupby("method")["round"].max().tolist() == [2, 2]
    assert (rounds.query("round > 0")["uplink_bytes"] > 0).all()
