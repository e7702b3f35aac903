"""``bench.time_study`` on the committed digits seeds frontier: its figures are the ones the
per-run replay (``python -m simulations.timeline``) gives for the same run and link, and a
link with no cited radio model says that its energy is compute alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench import time_study
from simulations import timeline

ROOT = Path(__file__).resolve().parents[1]
FRONTIER = ROOT / "results" / "frontier" / "digits"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("study")
    code = time_study.main([str(FRONTIER), "--methods", "fedavg,qsgd", "--profiles", "3g,geo",
                            "--out", str(out)])  # fmt: skip
    assert code == 0
    return json.loads((out / "study.json").read_text()), (out / "study.md").read_text()


def test_the_target_is_the_frontiers(study: tuple[dict, str]) -> None:
    report, _ = study
    frontier = json.loads((FRONTIER / "frontier-seeds.json").read_text())
    assert report["3g"]["target_accuracy"] == pytest.approx(frontier["wire"]["target_accuracy"])
    assert sorted(report["3g"]["methods"]) == ["fedavg", "qsgd"]


def test_time_to_target_is_the_single_runs_replay(study: tuple[dict, str],
                                                  tmp_path: Path) -> None:  # fmt: skip
    """Seed 2's FedAvg run replayed alone on 3G reaches the study's target at the study's time."""
    report, _ = study
    target = report["3g"]["target_accuracy"]
    run = next((FRONTIER / "fresh").glob("fedavg__*/seed-2"))
    assert timeline.main([str(run), "--link", "3g", "--out", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "timeline.csv")
    reached = rows[(rows["method"] == "fedavg") & (rows["accuracy"] >= target - 1e-9)]
    expected = float(reached["cumulative_time_s"].iloc[0])
    assert report["3g"]["methods"]["fedavg"]["time_to_target"]["2"] == pytest.approx(expected)
    # Slower links never make a run faster: GEO's round trips only add time.
    geo = report["geo"]["methods"]["fedavg"]["time_to_target"]["2"]
    assert geo > expected


def test_a_link_without_a_radio_model_says_its_energy_is_compute_alone(
        study: tuple[dict, str]) -> None:  # fmt: skip
    _, md = study
    geo = md.split("(`geo`)")[1]
    three_g = md.split("(`3g`)")[1].split("(`geo`)")[0]
    assert "No cited radio power model for geo" in geo
    assert "No cited radio power model" not in three_g
    assert time_study.radio_free("lte:0.5,geo:0.5") == ["geo"]
    assert time_study.radio_free("3g") == []


def test_a_seed_group_run_on_a_link_summarises_time_with_bands(tmp_path: Path) -> None:
    """``simulations.run --seeds ... --link``: every seed's rounds.csv carries the time
    model's columns, so the group's summary.json gains the across-seeds time section (the
    same as ``pemn_fl.seeds.aggregate_time`` on those rows) and a banded time figure; a
    group without them gets neither."""
    from pemn_fl import seeds as S
    from simulations.seedgroup import summarise

    runs = {s: dirs for s, dirs in time_study.seed_runs(FRONTIER, ["fedavg", "qsgd"]).items()
            if s in (1, 2)}  # fmt: skip
    timed = time_study.timed_frames(time_study.records(runs, None), "3g", "flower")
    for group, frames in (("timed", timed),
                          ("bytes", {s: f.drop(columns=["time_s"]) for s, f in timed.items()})):
        for seed, frame in frames.items():
            (tmp_path / group / f"seed-{seed}").mkdir(parents=True)
            frame.to_csv(tmp_path / group / f"seed-{seed}" / "rounds.csv", index=False)
        summarise(tmp_path / group, [1, 2], "wire")
    summary = json.loads((tmp_path / "timed" / "summary.json").read_text())
    expected = json.loads(json.dumps(S.aggregate_time(timed)))
    assert summary["time"] == expected
    assert summary["time"]["methods"]["qsgd"]["reached_target"] == 2
    assert (tmp_path / "timed" / "time_accuracy.png").stat().st_size > 10_000
    untimed = json.loads((tmp_path / "bytes" / "summary.json").read_text())
    assert "time" not in untimed and not (tmp_path / "bytes" / "time_accuracy.png").exists()
    assert untimed["methods"] == summary["methods"]


def test_two_directories_read_as_one_but_never_the_same_method_twice(
    study: tuple[dict, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A lever study beside its frontier: the runs of both directories, one report; a method
    found in both is refused in one line, since its rows would mix."""
    report, _ = study
    lever = tmp_path / "lever" / "fresh"
    lever.mkdir(parents=True)
    (lever / "qsgd__bits=4,dense-lr=0.1").symlink_to(next((FRONTIER / "fresh").glob("qsgd__*")))
    both = [str(FRONTIER), str(tmp_path / "lever")]
    assert time_study.main([*both, "--methods", "fedavg,qsgd", "--profiles", "3g",
                            "--out", str(tmp_path / "out")]) == 2  # fmt: skip
    assert "qsgd ran in more than one of" in capsys.readouterr().err
    only_fedavg = tmp_path / "frontier-fedavg" / "fresh"
    only_fedavg.mkdir(parents=True)
    (only_fedavg / "fedavg__dense-lr=0.1").symlink_to(next((FRONTIER / "fresh").glob("fedavg__*")))
    assert time_study.main([str(tmp_path / "frontier-fedavg"), str(tmp_path / "lever"),
                            "--profiles", "3g", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    joined = json.loads((tmp_path / "out" / "study.json").read_text())
    assert joined["3g"] == report["3g"]
    # DIR:methods says which directory a method is read from: the same report again.
    assert time_study.main([f"{FRONTIER}:fedavg", str(tmp_path / "lever"), "--profiles", "3g",
                            "--out", str(tmp_path / "picked")]) == 0  # fmt: skip
    picked = json.loads((tmp_path / "picked" / "study.json").read_text())
    assert picked["3g"] == report["3g"]
    assert "ran in more than one" not in capsys.readouterr().err
