"""Past one machine: the simulator joins an existing Ray cluster (issue 19 §1).

Slow: a real Ray head (``ray start --head``) on 127.0.0.1 with its own temp dir; the run
joins it with ``--ray-address`` and must equal a run on a private local Ray; the cluster is
stopped by its process group (every Ray process ``ray start --block`` launched), never by
name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--clients", "3", "--rounds", "2", "--dataset", "synthetic", "--model", "mlp",
        "--width", "0.5", "--dense-width", "0.5", "--methods", "evolve_dither,fedavg",
        "--quiet"]  # fmt: skip
# Message bytes differ by a byte or two per message between any two runs (Flower draws random
# node and run ids, serialised as varints): payload bytes and accuracies are the comparison.
SAME = ["method", "round", "clients_replied", "uplink_payload_bytes", "downlink_payload_bytes",
        "accuracy"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _simulate(out: Path, *extra: str) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "simulations.run", *TINY, *extra, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return pd.read_csv(out / "rounds.csv")


@pytest.mark.slow
def test_a_run_on_an_existing_ray_cluster_equals_a_local_run(tmp_path: Path) -> None:
    port = _free_port()
    # Ray's unix socket paths must stay short: a temp dir of our own directly under /tmp.
    temp = tempfile.mkdtemp(prefix="pemnray", dir="/tmp")
    ray = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--temp-dir", temp, "--num-cpus", "2", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        for line in head.stdout:  # type: ignore[union-attr]
            if "Ray runtime started" in line:
                break
            assert time.monotonic() < deadline and head.poll() is None, line
        joined = _simulate(tmp_path / "cluster", "--ray-address", f"127.0.0.1:{port}")
        config = (tmp_path / "cluster" / "config.json").read_text()
        assert f'"ray_address": "127.0.0.1:{port}"' in config  # --resume rejoins it
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # ray start --block stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    local = _simulate(tmp_path / "local")
    pd.testing.assert_frame_equal(joined[SAME], local[SAME])


def test_a_cluster_that_is_not_there_is_one_error_line(tmp_path: Path) -> None:
    """No Ray head at the address: Ray's own failure, said in one line, exit 2."""
    port = _free_port()
    proc = subprocess.run([sys.executable, "-m", "simulations.run", *TINY, "--ray-address",
                           f"127.0.0.1:{port}", "--out", str(tmp_path / "x")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}" in errors[0] and "Traceback" not in proc.stderr
