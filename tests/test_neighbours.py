"""``bench.neighbours``: which configurations neighbour a kept one, and the verdict on runs
laid out as the sweep writes them (the committed digits tuning runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import accuracy_frontier as F
from bench import neighbours as N
from pemn_fl import window as W
from pemn_fl.seeds import read_rounds

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "results" / "frontier" / "digits"
FEDAVG = ({"dense-lr": 0.02}, {"dense-lr": 0.05}, {"dense-lr": 0.1})


@pytest.mark.parametrize("kept,expected", [
    # at the top of the grid: one step beyond at the grid's own ratio (0.1 * 0.1 / 0.05)
    ({"dense-lr": 0.1}, [({"dense-lr": 0.2}, "beyond"), ({"dense-lr": 0.05}, "inside")]),
    ({"dense-lr": 0.05}, [({"dense-lr": 0.02}, "inside"), ({"dense-lr": 0.1}, "inside")]),
    ({"dense-lr": 0.02}, [({"dense-lr": 0.008}, "beyond"), ({"dense-lr": 0.05}, "inside")]),
])  # fmt: skip
def test_neighbours_are_the_next_grid_values_or_one_step_beyond_an_end(kept, expected) -> None:  # noqa: ANN001
    assert N.neighbours(kept, FEDAVG) == expected


def test_an_option_the_grid_does_not_vary_stays_and_each_option_moves_alone() -> None:
    grid = ({"bits": 4, "lr": 1.0, "k": 1}, {"bits": 4, "lr": 2.0, "k": 1},
            {"bits": 4, "lr": 1.0, "k": 2})  # fmt: skip
    found = N.neighbours({"bits": 4, "lr": 2.0, "k": 1}, grid)
    assert found == [({"bits": 4, "lr": 4.0, "k": 1}, "beyond"),
                     ({"bits": 4, "lr": 2.0, "k": 0.5}, "beyond"),
                     ({"bits": 4, "lr": 1.0, "k": 1}, "inside"),
                     ({"bits": 4, "lr": 2.0, "k": 2.0}, "inside")]  # fmt: skip
    assert all(c["bits"] == 4 for c, _ in found)


def _best(run: Path, method: str, rounds: int = 30) -> tuple[float, float]:
    frame = read_rounds(run / "rounds.csv")
    frame = frame[(frame["method"] == method) & (frame["round"] > 0) & (frame["round"] <= rounds)]
    return float(frame["accuracy"].max()), float(W.smoothed(frame)["accuracy"].max())


def test_the_verdict_is_read_from_the_runs_and_names_what_has_not_run(tmp_path: Path) -> None:
    """FedAvg kept at 0.1 on digits; its inside neighbour 0.05 'ran' (the committed tuning
    run); 0.2 did not: the table says so and the verdict compares the runs that exist."""
    out = tmp_path / "nb"
    for lr in ("0.1", "0.05"):
        (out / "runs").mkdir(parents=True, exist_ok=True)
        name = f"fedavg__dense-lr={lr}"
        (out / "runs" / name).symlink_to(DIGITS / "runs" / name)
    picked = F.tuned(F.collect(DIGITS, ["fedavg"])[0])
    assert picked.loc["fedavg", "config"] == "dense-lr=0.1"
    assert N.main(["--preset", "digits", "--rounds", "30", "--picked-from", str(DIGITS),
                   "--out", str(out), "--report-only"]) == 0  # fmt: skip
    md = (out / "neighbours.md").read_text()
    assert "| fedavg | dense-lr=0.2 | beyond | not run | | |" in md
    kept, inside = (_best(out / "runs" / f"fedavg__dense-lr={lr}", "fedavg")
                    for lr in ("0.1", "0.05"))  # fmt: skip
    assert f"| fedavg | dense-lr=0.1 | kept | 30 | {100 * kept[0]:.2f} (r" in md
    assert f"{100 * kept[1]:.2f} (r" in md and f"(target {100 * (kept[1] - 0.01):.2f})" in md
    best_word, window_word = (
        f"still ahead (by {100 * (k - n):.3f} pt)" if k >= n
        else f"**not** ahead ({100 * (k - n):.3f} pt)"
        for k, n in zip(kept, inside, strict=True))  # fmt: skip
    assert (f"the kept `dense-lr=0.1` is {best_word} by the best round, {window_word} by the "
            f"5-round mean, of the 1 neighbour(s) run (1 not run yet)") in md


def test_a_sweep_without_the_method_tuned_is_one_clear_error(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert N.main(["--rounds", "100", "--picked-from", str(tmp_path), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fedavg" in err and err.count("\n") == 1
    assert N.main(["--rounds", "100", "--picked-from", str(DIGITS), "--methods", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: no tuning grid for ['nope']")


def test_a_longer_run_is_read_at_the_horizon_asked(tmp_path: Path) -> None:
    """``--rounds 20`` over 30-round runs: every figure from their first 20 rounds."""
    out = tmp_path / "nb"
    (out / "runs").mkdir(parents=True)
    kept = DIGITS / "runs" / "fedavg__dense-lr=0.1"
    for lr in ("0.1", "0.2"):
        (out / "runs" / f"fedavg__dense-lr={lr}").symlink_to(kept)
    assert N.main(["--preset", "digits", "--rounds", "20", "--picked-from", str(DIGITS),
                   "--out", str(out), "--report-only"]) == 0  # fmt: skip
    md = (out / "neighbours.md").read_text()
    best, window = _best(out / "runs" / "fedavg__dense-lr=0.1", "fedavg", rounds=20)
    assert f"| fedavg | dense-lr=0.1 | kept | 20 | {100 * best:.2f} (r" in md
    assert f"{100 * window:.2f} (r" in md
    # the same run under two names: a tie, and a tie keeps the kept one ahead, by 0 pt
    assert "still ahead (by 0.000 pt) by the best round" in md


def test_the_margin_is_to_the_closest_neighbour(tmp_path: Path) -> None:
    """Two neighbours ran (0.05, and 0.02's run standing in for 0.2): the verdict's margin is
    to the better of them, never the weaker."""
    out = tmp_path / "nb"
    (out / "runs").mkdir(parents=True)
    for name, source in (("0.1", "0.1"), ("0.05", "0.05"), ("0.2", "0.02")):
        (out / "runs" / f"fedavg__dense-lr={name}").symlink_to(
            DIGITS / "runs" / f"fedavg__dense-lr={source}")
    assert N.main(["--preset", "digits", "--rounds", "30", "--picked-from", str(DIGITS),
                   "--out", str(out), "--report-only"]) == 0  # fmt: skip
    scores = {lr: _best(DIGITS / "runs" / f"fedavg__dense-lr={lr}", "fedavg")
              for lr in ("0.1", "0.05", "0.02")}  # fmt: skip
    # the fixture is not degenerate: the two neighbours differ under both rules
    assert all(scores["0.05"][i] != scores["0.02"][i] for i in (0, 1))
    md = (out / "neighbours.md").read_text()
    for i, rule in ((0, "by the best round"), (1, "by the 5-round mean")):
        closest = max(scores["0.05"][i], scores["0.02"][i])
        margin = 100 * (scores["0.1"][i] - closest)
        word = (f"still ahead (by {margin:.3f} pt)" if margin >= 0
                else f"**not** ahead ({margin:.3f} pt)")  # fmt: skip
        assert f"{word} {rule}" in md
    assert "of the 2 neighbour(s) run" in md and "not run yet" not in md
