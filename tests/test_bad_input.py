"""Bad input to the command-line tools: one clear ``error:`` line naming what was wrong,
exit status 2, no traceback, and nothing started or written. (The fault-injection issue's
probe found each of these giving a traceback or a silently wrong run.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _clear(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout[-500:] + proc.stderr[-1500:]
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.mark.parametrize(("option", "value", "word"), [
    ("--seed", "4294967296", "seed"),
    ("--margin", "nan", "margin"),
    ("--width", "1e-9", "width"),
    ("--width", "inf", "width"),
    ("--bits", "3", "bits"),
    ("--methods", "pemn,pemn", "only once"),
    ("--methods", "no_such_pkg.method", "cannot import"),
])  # fmt: skip
def test_simulator_rejects_bad_settings(option: str, value: str, word: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _clear(_run("simulations.run", option, value, "--rounds", "1", "--out", str(out)), word)
    assert not out.exists()  # rejected before anything was written


def test_simulator_rejects_an_unusable_out(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    _clear(_run("simulations.run", "--out", str(a_file)), "not a directory")
    _clear(_run("simulations.run", "--out", "/proc/pemn-fl-cannot-write"), "cannot write")
    full = tmp_path / "full"
    full.mkdir()
    (full / "rounds.csv").write_text("precious")
    _clear(_run("simulations.run", "--out", str(full)), "--overwrite")
    assert (full / "rounds.csv").read_text() == "precious" and a_file.read_text() == "keep me"


@pytest.mark.parametrize(("argv", "word"), [
    (["--width", "inf"], "width"), (["--width", "nan"], "width"), (["--keep", "1"], "keep"),
])  # fmt: skip
def test_describe_rejects_bad_settings(argv: list[str], word: str) -> None:
    _clear(_run("pemn_fl", "describe", "--model", "mlp", *argv), word)


@pytest.mark.parametrize(("content", "word"), [
    (b"", "not a rounds.csv"),
    (b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe binary", "not a rounds.csv"),
    (b"method,round\n", "lacks the column"),
    (b"method,round,cumulative_bytes,accuracy\npemn,0,0,", "no complete round"),
])  # fmt: skip
def test_plot_rejects_a_bad_rounds_file(content: bytes, word: str, tmp_path: Path) -> None:
    (tmp_path / "rounds.csv").write_bytes(content)
    _clear(_run("simulations.plot", str(tmp_path), "--out", str(tmp_path / "x.png")), word)
    assert not (tmp_path / "x.png").exists()


def test_deploy_refuses_resume_and_simulator_refuses_a_bad_bytes_level(tmp_path: Path) -> None:
    _clear(_run("simulations.deploy", "--resume", str(tmp_path)), "--resume is for")
    proc = _run("simulations.run", "--bytes", "bits", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "invalid choice: 'bits'" in proc.stderr
