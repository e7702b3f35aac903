"""``bench.accuracy_frontier --report-only --rounds N`` on runs longer than N: a view of their
first N rounds, written beside the full report, never over it (the converged frontier's
30-round view)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import accuracy_frontier as F
from pemn_fl import seeds as S
from pemn_fl import window as W

ROOT = Path(__file__).resolve().parents[1]
FRONTIER = ROOT / "results" / "frontier" / "digits"


def _report(out: Path, rounds: int) -> int:
    return F.main(["--preset", "digits", "--rounds", str(rounds), "--seeds", "1,2,3",
                   "--methods", "fedavg,qsgd", "--picked-from", str(FRONTIER), "--report-only",
                   "--out", str(out)])  # fmt: skip


def test_a_shorter_view_is_written_beside_the_full_report(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for method in ("fedavg", "qsgd"):
        run = next((FRONTIER / "fresh").glob(f"{method}__*"))
        (fresh / run.name).symlink_to(run)
    assert _report(tmp_path, 30) == 0
    full = json.loads((tmp_path / "frontier-seeds.json").read_text())
    assert _report(tmp_path, 20) == 0
    view = json.loads((tmp_path / "frontier-seeds-20-rounds.json").read_text())
    # The full report is untouched; the view is the same runs cut at round 20.
    assert json.loads((tmp_path / "frontier-seeds.json").read_text()) == full
    frames = W.truncated(S.load({s: d for s, d in S.seed_dirs(
        next(fresh.glob("fedavg__*"))).items()}), 20)  # fmt: skip
    assert view["wire"]["target_accuracy"] == pytest.approx(
        S.aggregate(frames, level="wire")["target_accuracy"])
    md = (tmp_path / "frontier-seeds-20-rounds.md").read_text()
    assert "A view of the first 20 rounds of 30-round runs" in md and "--report-only" in md
    assert (tmp_path / "frontier-seeds-20-rounds.png").is_file()


def test_a_killed_run_is_resumed_only_with_its_own_options(tmp_path: Path) -> None:
    """A sweep killed in a long run resumes that run from its checkpoint (``simulations.run
    --resume``) if, and only if, the run's recorded command is this one (less ``--out``)."""
    partial = tmp_path / "seed-1.partial"
    (partial / "checkpoint").mkdir(parents=True)
    args = ["--clients", "20", "--methods", "qsgd", "--bits", "4", "--seed", "1", "--rounds",
            "100", "--quiet"]  # fmt: skip
    command = ["/x/simulations/run.py", *args[:-1], "--out", str(partial), "--quiet"]
    (partial / "config.json").write_text(json.dumps({"command": " ".join(command)}))
    assert not F._killed_run_of(partial, args)  # no checkpoint yet: start again
    (partial / "checkpoint" / "server.pkl").write_bytes(b"x")
    # --out sits elsewhere in the recorded command: only the options count
    command = ["/x/simulations/run.py", *args, "--out", str(partial)]
    (partial / "config.json").write_text(json.dumps({"command": " ".join(command)}))
    assert F._killed_run_of(partial, args)
    assert not F._killed_run_of(partial, [*args[:-3], "30", "--quiet"])  # other rounds
    (partial / "config.json").write_text("{")  # damaged: start again, never a traceback
    assert not F._killed_run_of(partial, args)
