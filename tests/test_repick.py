"""A configuration re-picked at a longer horizon: ``bench.neighbours`` decides it
(``picks.json``), ``bench.accuracy_frontier --repick-from`` runs and reports it, and every
reader of ``fresh/`` takes the reported configuration's runs only (``bench.fresh_runs``), with
the short pick's runs still beside them. On the committed digits runs, laid out as the
sweeps write them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import accuracy_frontier as F
from bench import catchup, fresh_runs, levers, time_study
from bench import neighbours as N
from pemn_fl.seeds import read_rounds

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "results" / "frontier" / "digits"
KEPT, OTHER = "dense-lr=0.1", "dense-lr=0.05"


def _best(run: Path) -> float:
    frame = read_rounds(run / "rounds.csv")
    return float(frame[(frame["method"] == "fedavg") & (frame["round"] > 0)]["accuracy"].max())


@pytest.mark.parametrize("scores,expected", [
    ({"a": (0.8, 5), "b": (0.9, 9), "c": (0.7, 1)}, "b"),  # a neighbour ahead: re-picked
    ({"a": (0.9, 5), "b": (0.9, 5), "c": (0.7, 1)}, "a"),  # a full tie keeps the kept one
    ({"a": (0.9, 5), "b": (0.9, 4), "c": (0.9, 3)}, "c"),  # equal accuracy: fewer bytes
    ({"a": (0.9, 5), "b": (0.8, 1), "c": (0.85, 1)}, "a"),  # still ahead
    ({"c": (0.7, 1), "b": (0.9, 5), "a": (0.9, 5)}, "a"),  # a tie keeps it, wherever it is listed
    ({"a": (0.5, 5), "b": (0.9, 5)}, None),  # a neighbour has not run: undecided
    ({"b": (0.9, 5), "c": (0.95, 5)}, None),  # the kept one has not run: undecided
])  # fmt: skip
def test_the_repick_is_the_tuning_rule_once_the_whole_neighbourhood_ran(scores, expected) -> None:  # noqa: ANN001
    scored = {name: {"best": best, "bytes_at_best": b} for name, (best, b) in scores.items()}
    assert N.repick(scored, "a", 3) == expected


def _neighbours(tmp_path: Path) -> Path:
    """A neighbours check of FedAvg's kept 0.1 on digits whose 0.05 neighbour is ahead: real
    runs under other names (0.02's run stands in for the kept one; 0.1's, the tuning's pick,
    for 0.05; 0.05's, as accurate but later, for 0.2)."""
    out = tmp_path / "nb"
    (out / "runs").mkdir(parents=True)
    for name, source in ((KEPT, "dense-lr=0.02"), (OTHER, KEPT), ("dense-lr=0.2", OTHER)):
        (out / "runs" / f"fedavg__{name}").symlink_to(DIGITS / "runs" / f"fedavg__{source}")
    # the fixture is not degenerate: the stand-in for 0.05 is ahead of the kept one's
    assert _best(out / "runs" / f"fedavg__{OTHER}") > _best(out / "runs" / f"fedavg__{KEPT}")
    assert N.main(["--preset", "digits", "--rounds", "30", "--picked-from", str(DIGITS),
                   "--out", str(out), "--report-only"]) == 0  # fmt: skip
    return out


def test_the_neighbours_check_writes_its_pick(tmp_path: Path) -> None:
    out = _neighbours(tmp_path)
    picks = json.loads((out / "picks.json").read_text())
    assert picks["rounds"] == 30
    assert picks["methods"]["fedavg"] == {"kept": KEPT, "pick": OTHER, "decided": True}
    assert f"**re-picked** at 30 rounds: `{OTHER}`" in (out / "neighbours.md").read_text()
    # one neighbour gone: undecided, and the pick stays the kept one
    (out / "runs" / "fedavg__dense-lr=0.2").unlink()
    assert N.main(["--preset", "digits", "--rounds", "30", "--picked-from", str(DIGITS),
                   "--out", str(out), "--report-only"]) == 0  # fmt: skip
    picks = json.loads((out / "picks.json").read_text())
    assert picks["methods"]["fedavg"] == {"kept": KEPT, "pick": KEPT, "decided": False}


# The re-picked configuration's runs: FedAvg's real fresh runs, each under another seed's name
# (seed 1 reads seed 2's run, ...), so whichever configuration a reader takes shows per seed.
STAND_IN = {1: 2, 2: 3, 3: 1}


def _frontier(tmp_path: Path, repicked_seeds: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A seeds frontier whose fresh/ holds FedAvg's kept configuration on seeds 1-3, the
    re-picked one on ``repicked_seeds`` (and two runs not finished: rounds, no summary.json),
    and QSGD's kept one on 1-3."""
    out = tmp_path / "frontier"
    fresh = out / "fresh"
    fresh.mkdir(parents=True)
    for name in (f"fedavg__{KEPT}", "qsgd__bits=4,dense-lr=0.1"):
        (fresh / name).symlink_to(DIGITS / "fresh" / name)
    (fresh / f"fedavg__{OTHER}").mkdir()
    for seed in repicked_seeds:
        (fresh / f"fedavg__{OTHER}" / f"seed-{seed}").symlink_to(
            DIGITS / "fresh" / f"fedavg__{KEPT}" / f"seed-{STAND_IN[seed]}")
    for unfinished in ("seed-4.partial", "seed-5"):  # cut short; copied without its summary
        (fresh / f"fedavg__{OTHER}" / unfinished).mkdir()
        (fresh / f"fedavg__{OTHER}" / unfinished / "rounds.csv").write_bytes(
            (DIGITS / "fresh" / f"fedavg__{KEPT}" / "seed-3" / "rounds.csv").read_bytes())
    return out


def _best_of(summary: Path) -> float:
    return json.loads(summary.read_text())["methods"]["fedavg"]["best_accuracy"]


def _report(out: Path, *extra: str) -> int:
    return F.main(["--preset", "digits", "--rounds", "30", "--seeds", "1,2,3", "--methods",
                   "fedavg,qsgd", "--picked-from", str(DIGITS), "--out", str(out),
                   "--report-only", *extra])  # fmt: skip


def test_a_repicked_configuration_is_the_one_reported_and_read(tmp_path: Path) -> None:
    out, check = _frontier(tmp_path), _neighbours(tmp_path)
    assert _report(out) == 0  # the short tuning's picks: FedAvg on every seed
    report = json.loads((out / "frontier-seeds.json").read_text())
    assert report["configs"] == {"fedavg": KEPT, "qsgd": "bits=4,dense-lr=0.1"}
    assert report["wire"]["seeds"] == [1, 2, 3] and report["repicked"] == {}
    assert sorted(fresh_runs.reported_runs(out)["fedavg"]) == [1, 2, 3]

    assert _report(out, "--repick-from", str(check)) == 0
    report = json.loads((out / "frontier-seeds.json").read_text())
    assert report["configs"]["fedavg"] == OTHER and report["repicked"] == {"fedavg": [KEPT, OTHER]}
    assert report["wire"]["seeds"] == [1, 2, 3] and report["repick_pending"] == {}
    md = (out / "frontier-seeds.md").read_text()
    assert f"| fedavg | {OTHER} (re-picked) | 1,2,3 |" in md
    assert f"--repick-from {check}" in md and f"fedavg `{KEPT}` → `{OTHER}`" in md
    kept_runs = DIGITS / "fresh" / f"fedavg__{KEPT}"
    # the fixture is not degenerate: the stand-ins differ from the kept runs seed by seed
    assert any(_best_of(kept_runs / f"seed-{s}" / "summary.json")
               != _best_of(kept_runs / f"seed-{STAND_IN[s]}" / "summary.json") for s in STAND_IN)
    for seed, run in fresh_runs.reported_runs(out)["fedavg"].items():  # the re-picked runs, by seed
        assert run == out / "fresh" / f"fedavg__{OTHER}" / f"seed-{seed}"

    # every reader of fresh/ takes the reported configuration's runs only (never the run cut
    # short beside them)
    assert sorted(fresh_runs.reported_runs(out)["fedavg"]) == [1, 2, 3]
    assert {s: e["best_accuracy"] for s, e in levers._fresh_summaries(out, "fedavg").items()} == {
        s: _best_of(kept_runs / f"seed-{STAND_IN[s]}" / "summary.json") for s in STAND_IN}
    assert {r.parent.name for r in catchup.runs_of(out)} == {
        f"fedavg__{OTHER}", "qsgd__bits=4,dense-lr=0.1"}
    by_seed = time_study.seed_runs(out, ["fedavg"])
    assert sorted(by_seed) == [1, 2, 3] and all(len(runs) == 1 for runs in by_seed.values())
    assert by_seed[1][0].parent.name == f"fedavg__{OTHER}"


def test_a_repick_not_run_on_every_seed_shows_the_kept_one_and_says_so(tmp_path: Path) -> None:
    """A sweep cut short after the re-picked configuration's seeds 1-2: the report keeps
    every seed with the kept configuration and names the seed the new one lacks, instead of
    dropping seed 3 from every method."""
    out, check = _frontier(tmp_path, repicked_seeds=(1, 2)), _neighbours(tmp_path)
    assert _report(out, "--repick-from", str(check)) == 0
    report = json.loads((out / "frontier-seeds.json").read_text())
    assert report["configs"]["fedavg"] == KEPT and report["repicked"] == {}
    assert report["repick_pending"] == {"fedavg": {"kept": KEPT, "pick": OTHER,
                                                   "missing_seeds": [3]}}  # fmt: skip
    assert report["wire"]["seeds"] == [1, 2, 3]
    md = (out / "frontier-seeds.md").read_text()
    assert f"| fedavg | {KEPT} | 1,2,3 |" in md
    assert f"fedavg `{KEPT}` → `{OTHER}` not run yet on seed(s) 3, shown with `{KEPT}`" in md
    assert sorted(fresh_runs.reported_runs(out)["fedavg"]) == [1, 2, 3]
    assert fresh_runs.reported_runs(out)["fedavg"][1].parent.name == f"fedavg__{KEPT}"


def test_two_configurations_without_a_record_are_one_clear_error(tmp_path: Path,
                                                                capsys) -> None:  # noqa: ANN001
    out = _frontier(tmp_path)  # no report yet: nothing says which FedAvg runs are meant
    with pytest.raises(ValueError, match="2 configurations of fedavg"):
        fresh_runs.method_dirs(out)
    assert catchup.main([str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--report-only" in err
    assert time_study.main([str(out), "--out", str(tmp_path / "t.md")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("picks,message", [
    (None, "not found: run python -m bench.neighbours"),
    ("{not json", "is not a bench.neighbours picks file"),
    ({"rounds": 30}, "is not a bench.neighbours picks file"),
    ({"rounds": 100, "methods": {}}, "checked 100 rounds and this frontier runs 30"),
    ({"rounds": 30, "methods": {"fedavg": {"kept": "dense-lr=0.02", "pick": OTHER,
                                           "decided": True}}}, "another tuning sweep"),
])  # fmt: skip
def test_a_check_that_does_not_fit_is_one_clear_error_before_any_run(
        tmp_path: Path, capsys, picks, message) -> None:  # noqa: ANN001
    check = tmp_path / "nb"
    check.mkdir()
    if picks is not None:
        text = picks if isinstance(picks, str) else json.dumps(picks)
        (check / "picks.json").write_text(text)
    out = _frontier(tmp_path)
    assert _report(out, "--repick-from", str(check)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (out / "frontier-seeds.json").exists()


def test_an_undecided_check_keeps_the_short_pick(tmp_path: Path) -> None:
    check = _neighbours(tmp_path)
    picks = json.loads((check / "picks.json").read_text())
    picks["methods"]["fedavg"]["decided"] = False
    (check / "picks.json").write_text(json.dumps(picks))
    out = _frontier(tmp_path)
    assert _report(out, "--repick-from", str(check)) == 0
    report = json.loads((out / "frontier-seeds.json").read_text())
    assert report["configs"]["fedavg"] == KEPT and report["repicked"] == {}
    assert "Re-picked at 30 rounds" in (out / "frontier-seeds.md").read_text()
    assert "): none." in (out / "frontier-seeds.md").read_text()


def test_the_runs_launched_are_the_repicked_configuration(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Without --report-only: each fresh seed runs the re-picked configuration (the runs
    themselves are simulations.run's; recorded here, not run)."""
    launched = []
    monkeypatch.setattr(F, "run_one", lambda base, method, config, rounds, out, seed=None:
                        launched.append((method, F.config_name(config), rounds, seed)))
    out, check = _frontier(tmp_path), _neighbours(tmp_path)
    assert F.main(["--preset", "digits", "--rounds", "30", "--seeds", "1,2,3", "--methods",
                   "fedavg,qsgd", "--picked-from", str(DIGITS), "--out", str(out),
                   "--repick-from", str(check)]) == 0  # fmt: skip
    assert [(m, c, s) for m, c, _, s in launched if m == "fedavg"] == [
        ("fedavg", OTHER, 1), ("fedavg", OTHER, 2), ("fedavg", OTHER, 3)]
    assert {c for m, c, _, _ in launched if m == "qsgd"} == {"bits=4,dense-lr=0.1"}
    assert {r for _, _, r, _ in launched} == {30}


def test_a_configuration_beyond_the_grid_is_read_back_from_its_name() -> None:
    assert F._config_of("qsgd", "bits=4,dense-lr=0.008") == {"bits": 4.0, "dense-lr": 0.008}
    assert F.config_name(F.parse_config("bits=4,dense-lr=0.008")) == "bits=4,dense-lr=0.008"
    grid_entry = F.grids()["fedavg"][0]
    assert F._config_of("fedavg", F.config_name(grid_entry)) == grid_entry
