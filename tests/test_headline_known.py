"""Every headline number and verdict on a hand-made, non-degenerate group, worked out by hand.

The group (``tests/headline.py``): seeds 3, 1, 2 given in that order; three methods
(evolve 0.25 MB a round, qsgd 2 MB, FedAvg 2.5 MB, wire level, both directions); FedAvg's
seed-mean curve peaks mid-run; seed 2's FedAvg stopped after round 3. Each assertion says
where its number comes from, so a reader can check it without running anything. The
arithmetic in the comments uses the accuracies of ``tests/headline.py``:

    seed   method   round 0    1      2      3      4
    1      evolve   0.09   0.70   0.80   0.815  0.83
    1      qsgd     0.12   0.80   0.80   0.85   0.86
    1      fedavg   0.10   0.60   0.825  0.78   0.83
    2      evolve   0.09   0.75   0.82   0.80   0.81
    2      qsgd     0.12   0.81   0.79   0.80   0.805
    2      fedavg   0.10   0.80   0.83   0.79   (killed)
    3      evolve   0.09   0.60   0.78   0.80   0.812
    3      qsgd     0.12   0.74   0.83   0.84   0.85
    3      fedavg   0.10   0.50   0.81   0.88   0.83
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pemn_fl import seeds as S
from pemn_fl import timesummary as TS
from pemn_fl.report import fedavg_target, summarize, summary_table
from tests.headline import MB, group, rounds, seed_frame

# FedAvg's seed-mean curve over the rounds all three seeds finished (0-3):
# round 1: (0.60 + 0.80 + 0.50) / 3 = 0.6333; round 2: (0.825 + 0.83 + 0.81) / 3 = 0.821667;
# round 3: (0.78 + 0.79 + 0.88) / 3 = 0.816667. Peak at round 2, so the target is 0.811667.
# (Not the best single round, 0.88 - 0.01; not the last common round, 0.816667 - 0.01; not
# the mean of what each round has, which would count round 4: (0.83 + 0.83) / 2 = 0.83.)
TARGET = (0.825 + 0.83 + 0.81) / 3 - 0.01


def _row(rows: list[dict], budget: float) -> dict:
    return next(r for r in rows if r["budget_bytes"] == budget)


# -- the seeds summary -------------------------------------------------------------------
def test_the_target_is_the_seed_mean_peak_over_the_rounds_every_seed_finished() -> None:
    summary = S.aggregate(group())
    assert summary["target_accuracy"] == pytest.approx(TARGET, abs=1e-12)
    assert summary["seeds"] == [1, 2, 3] and summary["n"] == 3
    assert summary["bytes_level"] == "wire"
    assert summary["target_rule"].startswith("maximum of FedAvg's seed-mean accuracy curve")


def test_two_seeds_already_take_the_seed_mean_curve_not_one_runs_best() -> None:
    # Seeds 2 and 3 share rounds 0-3: round 2 (0.83 + 0.81) / 2 = 0.82, round 3 (0.79 + 0.88)
    # / 2 = 0.835: target 0.825. One run's rule would give seed 2's 0.83 - 0.01 or seed 3's
    # 0.88 - 0.01.
    summary = S.aggregate({3: seed_frame(3), 2: seed_frame(2)})
    assert summary["target_accuracy"] == pytest.approx(0.825)
    assert summary["target_rule"].startswith("maximum of FedAvg's seed-mean accuracy curve")
    # FedAvg reaches 0.825 in round 2 on seed 2 (0.83) and round 3 on seed 3 (0.88).
    assert summary["methods"]["fedavg"]["round_to_target"] == {"2": 2, "3": 3}


def test_rounds_bytes_and_fewer_bytes_than_fedavg_seed_by_seed() -> None:
    methods = S.aggregate(group())["methods"]
    fed, evolve, qsgd = methods["fedavg"], methods["evolve"], methods["qsgd"]
    # FedAvg first reaches 0.811667: seed 1 in round 2 (0.825), seed 2 in round 2 (0.83),
    # seed 3 in round 3 (0.88; round 2's 0.81 is short). 2.5 MB a round.
    assert fed["round_to_target"] == {"1": 2, "2": 2, "3": 3}
    assert fed["bytes_to_target"] == {"1": 5 * MB, "2": 5 * MB, "3": 7_500_000}
    assert (fed["reached_target"], fed["seeds"]) == (3, 3)
    assert "fewer_bytes_than_fedavg_to_target" not in fed
    # evolve: seed 1 round 3 (0.815), seed 2 round 2 (0.82), seed 3 round 4 (0.812), at
    # 0.25 MB a round; FedAvg's bytes on the same seed over them: 5 / 0.75, 5 / 0.5, 7.5 / 1.
    assert evolve["round_to_target"] == {"1": 3, "2": 2, "3": 4}
    assert evolve["bytes_to_target"] == {"1": 750_000, "2": 500_000, "3": MB}
    assert evolve["fewer_bytes_than_fedavg_to_target"] == pytest.approx(
        {"1": 5 / 0.75, "2": 10.0, "3": 7.5})  # fmt: skip
    # The minimum over seeds is seed 1's (listed second), not the first listed (seed 3).
    assert evolve["fewer_bytes_than_fedavg_to_target_min"] == pytest.approx(5 / 0.75)
    assert evolve["reached_target"] == 3
    # qsgd: seed 1 round 3 (0.85, 6 MB), seed 3 round 2 (0.83, 4 MB), never on seed 2 (its
    # best, 0.81 in round 1, is short): no minimum, as it did not reach it on every seed.
    assert qsgd["round_to_target"] == {"1": 3, "2": None, "3": 2}
    assert qsgd["bytes_to_target"] == {"1": 6 * MB, "2": None, "3": 4 * MB}
    assert qsgd["fewer_bytes_than_fedavg_to_target"] == pytest.approx(
        {"1": 5 / 6, "2": None, "3": 7.5 / 4})  # fmt: skip
    assert qsgd["fewer_bytes_than_fedavg_to_target_min"] is None
    assert qsgd["reached_target"] == 2


def test_best_final_and_total_mean_and_sample_std_over_seeds() -> None:
    methods = S.aggregate(group())["methods"]

    def check(stat: dict, values: list[float]) -> None:
        assert stat == {"mean": pytest.approx(float(np.mean(values))),
                        "std": pytest.approx(float(np.std(values, ddof=1))), "n": len(values)}

    # FedAvg's best is mid-run on seeds 2 (round 2) and 3 (round 3), its final is seed 2's
    # round 3 (0.79: its last finished round), its total 4 or 3 rounds of 2.5 MB.
    check(methods["fedavg"]["best_accuracy"], [0.83, 0.83, 0.88])
    check(methods["fedavg"]["final_accuracy"], [0.83, 0.79, 0.83])
    check(methods["fedavg"]["total_bytes"], [10 * MB, 7.5 * MB, 10 * MB])
    check(methods["evolve"]["best_accuracy"], [0.83, 0.82, 0.812])
    check(methods["evolve"]["final_accuracy"], [0.83, 0.81, 0.812])
    check(methods["qsgd"]["total_bytes"], [8 * MB] * 3)
    # The sample std (n - 1): 0.028868 for FedAvg's best, not the population's 0.023570.
    assert methods["fedavg"]["best_accuracy"]["std"] == pytest.approx(0.0288675, abs=1e-7)


def test_the_budget_table_on_the_default_megabyte_grid() -> None:
    rows = S.aggregate(group())["budgets"]
    # FedAvg's 10 MB is the largest total: budgets up to 3 x 10 MB = 30 MB, 100 MB left out.
    assert [r["budget_bytes"] for r in rows] == [b * MB for b in (0.03, 0.1, 0.3, 1, 3, 10, 30)]
    for small in (0.03 * MB, 0.1 * MB):  # nobody finished a round: initial models only
        row = _row(rows, small)
        assert {m: (c["mean"], c["trained_seeds"]) for m, c in row["methods"].items()} == {
            "evolve": (pytest.approx(0.09), 0), "qsgd": (pytest.approx(0.12), 0),
            "fedavg": (pytest.approx(0.10), 0)}  # fmt: skip
        assert (row["leader"], row["runner_up"], row["lead"], row["clear_lead"]) == (
            None, None, None, None)  # fmt: skip
    # 0.3 MB: evolve's round 1 (0.70, 0.75, 0.60); qsgd's initial 0.12 is the runner-up.
    row = _row(rows, 0.3 * MB)
    assert row["methods"]["evolve"]["per_seed"] == {3: 0.60, 1: 0.70, 2: 0.75}
    assert (row["leader"], row["runner_up"]) == ("evolve", "qsgd")
    assert row["lead"] == pytest.approx(np.mean([0.70, 0.75, 0.60]) - 0.12)
    assert row["clear_lead"] is True
    # 1 MB: evolve's 4th round ends exactly on the budget and counts (seed 3's 0.812).
    row = _row(rows, 1 * MB)
    assert row["methods"]["evolve"]["per_seed"] == {3: 0.812, 1: 0.83, 2: 0.82}
    assert row["methods"]["evolve"]["trained_seeds"] == 3
    assert row["methods"]["qsgd"]["trained_seeds"] == 0
    # 3 MB: evolve 0.820667 (std 0.0090) against qsgd's round 1, 0.783333 (std 0.0379): ahead
    # on every seed, but the lead (0.0373) is between the two stds: not clear.
    row = _row(rows, 3 * MB)
    assert row["methods"]["qsgd"]["per_seed"] == {3: 0.74, 1: 0.80, 2: 0.81}
    assert row["methods"]["fedavg"]["per_seed"] == {3: 0.50, 1: 0.60, 2: 0.80}
    assert (row["leader"], row["runner_up"]) == ("evolve", "qsgd")
    assert row["lead"] == pytest.approx(np.mean([0.83, 0.82, 0.812]) - np.mean([0.8, 0.81, 0.74]))
    assert row["methods"]["evolve"]["std"] < row["lead"] < row["methods"]["qsgd"]["std"]
    assert row["clear_lead"] is False
    # 10 MB (FedAvg's last round ends on it) and 30 MB: FedAvg 0.846667 leads qsgd 0.84 on
    # the mean, but is behind on seed 1 (0.83 < 0.86): not clear.
    for budget in (10 * MB, 30 * MB):
        row = _row(rows, budget)
        assert row["methods"]["fedavg"]["per_seed"] == {3: 0.88, 1: 0.83, 2: 0.83}
        assert (row["leader"], row["runner_up"], row["clear_lead"]) == ("fedavg", "qsgd", False)
        assert row["lead"] == pytest.approx(np.mean([0.83, 0.83, 0.88]) - 0.84)


def test_the_budget_table_in_markdown_names_megabytes_and_marks_the_leader() -> None:
    text = S.budget_markdown(S.aggregate(group())["budgets"])
    lines = text.split("\n")
    assert lines[0] == ("| method | ≤ 0.03 MB | ≤ 0.1 MB | ≤ 0.3 MB | ≤ 1 MB | ≤ 3 MB | ≤ 10 MB"
                        " | ≤ 30 MB |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|"
    # mean ± std in %, one decimal; bold where the method leads; "(initial)" if untrained.
    assert lines[2] == ("| evolve | (initial) | (initial) | **68.3 ± 7.6** | **82.1 ± 0.9** | "
                        "**82.1 ± 0.9** | 82.1 ± 0.9 | 82.1 ± 0.9 |")
    assert lines[3] == ("| qsgd | (initial) | (initial) | (initial) | (initial) | 78.3 ± 3.8 | "
                        "84.0 ± 2.6 | 84.0 ± 2.6 |")
    assert lines[4] == ("| fedavg | (initial) | (initial) | (initial) | (initial) | 63.3 ± 15.3 | "
                        "**84.7 ± 2.9** | **84.7 ± 2.9** |")
    assert lines[5] == "| *leads* | - | - | evolve | evolve | evolve | fedavg | fedavg |"
    assert lines[6] == "| *clear lead* | - | - | yes | yes | no | no | no |"


def test_the_terminal_table_gives_percent_megabytes_and_reached_of_n() -> None:
    lines = S.aggregate_table(S.aggregate(group())).split("\n")
    assert lines[0] == "3 seed(s) [1, 2, 3], bytes at the wire level"
    tokens = {line[:42].strip(): line[42:].split() for line in lines[2:5]}
    assert tokens == {
        "Evolving prototype, vote counts": ["82.07", "±", "0.90", "81.73", "±", "1.10", "1.00",
                                            "±", "0.00", "3/3"],
        "QSGD (stochastic levels)": ["84.00", "±", "2.65", "83.83", "±", "2.93", "8.00", "±",
                                     "0.00", "2/3"],
        "FedAvg (dense floats)": ["84.67", "±", "2.89", "81.67", "±", "2.31", "9.17", "±",
                                  "1.44", "3/3"],
    }  # fmt: skip
    assert lines[5] == ("target: maximum of FedAvg's seed-mean accuracy curve over its training "
                        "rounds - 1 pt = 81.17 %")


def test_a_seed_recorded_before_the_wire_level_puts_the_whole_group_at_the_message_level() -> None:
    frames = group()
    frames[2] = seed_frame(2, wire=False)
    summary = S.aggregate(frames)
    assert summary["bytes_level"] == "message"
    # A message is its wire bytes less 1000 per direction: evolve 248,000 bytes a round.
    assert summary["methods"]["evolve"]["bytes_to_target"] == {"1": 3 * 248_000,
                                                               "2": 2 * 248_000,
                                                               "3": 4 * 248_000}  # fmt: skip
    assert summary["methods"]["fedavg"]["total_bytes"]["mean"] == pytest.approx(
        (4 + 3 + 4) * 2_498_000 / 3)  # fmt: skip


def test_the_mean_curve_keeps_the_rounds_every_seed_has_and_bands_hold_the_last_model() -> None:
    per = S._method_frames(group(), "wire")["fedavg"]
    curve = S.mean_curve(per)
    assert curve.index.tolist() == [0, 1, 2, 3]  # seed 2 has no round 4
    assert curve.tolist() == pytest.approx([0.10, (0.6 + 0.8 + 0.5) / 3, TARGET + 0.01,
                                            (0.78 + 0.79 + 0.88) / 3])  # fmt: skip
    # At 2.4 MB every seed holds its initial model; at 10 MB seed 2 holds its last (round 3,
    # 0.79), the others their round 4 (0.83); at 5 MB exactly, round 2 counts.
    mean, low, high = S.band(per, np.array([2.4 * MB, 5 * MB, 10 * MB]))
    assert mean.tolist() == pytest.approx([0.10, TARGET + 0.01, (0.83 + 0.79 + 0.83) / 3])
    assert (high - mean).tolist() == pytest.approx(
        [0.0, np.std([0.825, 0.83, 0.81], ddof=1), np.std([0.83, 0.79, 0.83], ddof=1)])
    assert (mean - low).tolist() == pytest.approx((high - mean).tolist())
    # Two seeds: min-max, not ±1 std.
    _, low, high = S.band({1: per[1], 3: per[3]}, np.array([7.5 * MB]))
    assert (low[0], high[0]) == (0.78, 0.88)
    grid = S.band_grid(S._method_frames(group(), "wire"), points=5)
    assert grid[0] == pytest.approx(250_000) and grid[-1] == pytest.approx(10 * MB)


def test_a_group_directory_reads_each_seeds_own_file_and_skips_what_is_not_a_seed_run(
    tmp_path: Path,
) -> None:
    for seed, frame in group().items():
        (tmp_path / f"seed-{seed}").mkdir()
        frame.to_csv(tmp_path / f"seed-{seed}" / "rounds.csv", index=False)
    (tmp_path / "seed-4").mkdir()  # a seed that never started: no rounds.csv
    (tmp_path / "seed-5.partial").mkdir()
    seed_frame(1).to_csv(tmp_path / "seed-5.partial" / "rounds.csv", index=False)
    dirs = S.seed_dirs(tmp_path)
    assert list(dirs) == [1, 2, 3]
    frames = S.load(dirs)
    assert [len(frames[s]) for s in (1, 2, 3)] == [15, 14, 15]  # seed 2's FedAvg stopped
    assert frames[3]["accuracy"].max() == 0.88
    from_files = S.aggregate(frames)
    assert from_files["methods"] == S.aggregate(group())["methods"]


def test_a_fedavg_whose_initial_model_beats_its_training_sets_the_target_from_training() -> None:
    # FedAvg diverges: round 0 (0.50) beats every trained round. The target is its best
    # trained round (0.40) - 1 pt, in a run's summary and across seeds alike.
    frame = rounds({"pemn": ([0.1, 0.30, 0.395], 10_000, 10_000),
                    "fedavg": ([0.50, 0.40, 0.20], 100_000, 100_000)})  # fmt: skip
    assert fedavg_target(frame) == pytest.approx(0.39)
    assert summarize(frame)["target_accuracy"] == pytest.approx(0.39)
    assert summarize(frame)["methods"]["pemn"]["bytes_to_target"] == 2 * 20_000
    assert S.aggregate({4: frame, 9: frame})["target_accuracy"] == pytest.approx(0.39)
    assert S.aggregate({4: frame, 9: frame})["methods"]["pemn"]["round_to_target"] == {
        "4": 2, "9": 2}  # fmt: skip


def test_a_fedavg_that_never_took_an_update_sets_no_target() -> None:
    lost = rounds({"pemn": ([0.1, 0.5], 10_000, 10_000),
                   "fedavg": ([0.1, 0.1], 100_000, 100_000)},
                  replied=0)  # every reply lost to faults  # fmt: skip
    assert summarize(lost)["target_accuracy"] is None
    for frames in ({1: lost}, {1: lost, 2: lost, 3: lost}):
        summary = S.aggregate(frames)
        assert summary["target_accuracy"] is None
        assert summary["methods"]["pemn"]["reached_target"] == 0
        assert summary["methods"]["pemn"]["fewer_bytes_than_fedavg_to_target_min"] is None


# -- who leads a budget -------------------------------------------------------------------
def _budget_row(per_seed: dict[str, list[float]]) -> dict:
    """The 1 MB row of a group with one round of 1 MB per method: ``method -> its round-1
    accuracy on seeds 1, 2, 3`` (methods listed in this order in every run)."""
    frames = {seed: rounds({m: ([0.1, acc[i]], MB // 2, MB // 2) for m, acc in per_seed.items()})
              for i, seed in enumerate((1, 2, 3))}  # fmt: skip
    return S.aggregate(frames, budgets=[MB])["budgets"][0]


def test_a_tie_is_never_a_clear_lead_and_the_first_listed_method_takes_it() -> None:
    # Binary fractions, so both means are exactly 0.5 whatever the order of the sum.
    row = _budget_row({"fedavg": [0.25, 0.5, 0.75], "qsgd": [0.75, 0.5, 0.25],
                       "evolve": [0.3, 0.3, 0.3]})  # fmt: skip
    assert (row["leader"], row["runner_up"]) == ("fedavg", "qsgd")  # equal means: run order
    assert row["lead"] == 0.0 and row["clear_lead"] is False
    # Tied on every seed, with no spread at all: still not a clear lead.
    row = _budget_row({"qsgd": [0.6] * 3, "fedavg": [0.6] * 3})
    assert (row["leader"], row["lead"], row["clear_lead"]) == ("qsgd", 0.0, False)


def test_a_clear_lead_is_ahead_on_every_seed_and_by_more_than_either_std() -> None:
    # Ahead on every seed, lead 0.167 > both stds (0, 0.058): clear.
    row = _budget_row({"a": [0.80, 0.80, 0.80], "b": [0.60, 0.60, 0.70], "c": [0.1] * 3})
    assert (row["leader"], row["runner_up"], row["clear_lead"]) == ("a", "b", True)
    # A lead of 0.13 > both stds (0, 0.121), but b wins seed 3 (0.81 > 0.80): not clear.
    row = _budget_row({"a": [0.80, 0.80, 0.80], "b": [0.60, 0.60, 0.81], "c": [0.1] * 3})
    assert row["lead"] > max(row["methods"]["a"]["std"], row["methods"]["b"]["std"])
    assert (row["leader"], row["clear_lead"]) == ("a", False)
    # Level with b on seed 1, ahead on the others by more than the spread: not clear (a tie
    # on one seed is not being ahead on it).
    row = _budget_row({"a": [0.80, 0.80, 0.80], "b": [0.80, 0.60, 0.60], "c": [0.1] * 3})
    assert row["lead"] > max(row["methods"]["a"]["std"], row["methods"]["b"]["std"])
    assert row["clear_lead"] is False
    # A lead exactly as large as the larger std (0.25, binary fractions: exact): not clear.
    row = _budget_row({"a": [0.5, 0.75, 1.0], "b": [0.375, 0.5, 0.625], "c": [0.1] * 3})
    assert (row["lead"], row["methods"]["a"]["std"], row["methods"]["b"]["std"]) == (
        0.25, 0.25, 0.125)  # fmt: skip
    assert row["clear_lead"] is False


def test_a_method_that_trained_leads_one_that_did_not_even_below_its_initial_model() -> None:
    # 0.3 MB: evolve finished round 1 (0.25 MB) but got worse than qsgd's untrained 0.12.
    frames = {s: rounds({"qsgd": ([0.12, 0.9], MB, MB), "evolve": ([0.09, acc], 150_000,
                                                                    100_000)})
              for s, acc in ((5, 0.11), (6, 0.10), (7, 0.11))}  # fmt: skip
    row = S.aggregate(frames, budgets=[300_000])["budgets"][0]
    assert (row["leader"], row["runner_up"]) == ("evolve", "qsgd")
    assert row["methods"]["qsgd"]["trained_seeds"] == 0
    assert row["lead"] == pytest.approx((0.11 + 0.10 + 0.11) / 3 - 0.12)
    assert row["clear_lead"] is False


# -- a run's own summary --------------------------------------------------------------------
def test_a_runs_summary_when_fedavg_peaked_mid_run() -> None:
    s = summarize(seed_frame(3))
    # Seed 3: FedAvg's best is round 3 (0.88), its last 0.83: target 0.87, reached in round 3.
    assert s["target_accuracy"] == pytest.approx(0.87)
    fed, evolve, qsgd = (s["methods"][m] for m in ("fedavg", "evolve", "qsgd"))
    assert (fed["best_accuracy"], fed["final_accuracy"], fed["rounds"]) == (0.88, 0.83, 4)
    assert fed["bytes_to_target"] == 7_500_000 and fed["total_bytes"] == 10 * MB
    assert evolve["bytes_to_target"] is None and qsgd["bytes_to_target"] is None
    assert evolve["total_bytes"] == MB and qsgd["total_bytes"] == 8 * MB
    assert (s["headline_method"], s["ratio_vs_fedavg"]) == ("evolve", None)
    # At the headline method's best (0.812, its round 4, 1 MB): FedAvg first passes 0.812 in
    # round 3 (round 2's 0.81 is short): 7.5 MB, 7.5x more.
    assert s["at_best"] == {"method": "evolve", "accuracy": 0.812, "method_bytes": MB,
                            "fedavg_bytes": 7_500_000, "ratio": pytest.approx(7.5)}  # fmt: skip
    lines = summary_table(s).split("\n")
    assert lines[-4:] == [
        "target accuracy (FedAvg best - 1 pt): 0.870",
        "Evolving prototype, vote counts never reached the target",
        "QSGD (stochastic levels) never reached the target",
        "at the best accuracy of Evolving prototype, vote counts (0.812): it sent 1.000 MB, "
        "FedAvg 7.500 MB (7.5x more)",
    ]  # fmt: skip


def test_a_runs_summary_when_fedavg_was_cut_short_and_a_method_reached_it() -> None:
    s = summarize(seed_frame(2))
    # Seed 2: FedAvg rounds 0-3, best 0.83 (round 2): target 0.82, which evolve reaches in
    # round 2 (0.82 exactly: 0.5 MB) and FedAvg in round 2 (5 MB): 10x.
    assert s["target_accuracy"] == pytest.approx(0.82)
    assert (s["methods"]["fedavg"]["rounds"], s["methods"]["fedavg"]["final_accuracy"]) == (3, 0.79)
    assert s["methods"]["evolve"]["bytes_to_target"] == 500_000
    assert s["methods"]["fedavg"]["bytes_to_target"] == 5 * MB
    assert s["ratio_vs_fedavg"] == pytest.approx(10.0)
    assert s["methods"]["qsgd"]["fewer_bytes_than_fedavg_to_target"] is None
    lines = summary_table(s).split("\n")
    assert "Evolving prototype, vote counts reached it; FedAvg needed 10.0x more bytes" in lines
    # The same rule across seeds: one seed's summary gives the same target and bytes.
    one = S.aggregate({2: seed_frame(2)})
    assert one["target_accuracy"] == s["target_accuracy"]
    assert one["methods"]["evolve"]["bytes_to_target"] == {"2": 500_000}
    assert one["methods"]["evolve"]["fewer_bytes_than_fedavg_to_target_min"] == pytest.approx(10)
    # At the payload level: evolve's two rounds of (149,000 - 100) + (99,000 - 100) bytes.
    assert summarize(seed_frame(2), level="payload")["methods"]["evolve"]["bytes_to_target"] == (
        2 * (148_900 + 98_900))  # fmt: skip


def test_the_headline_method_is_the_first_other_than_fedavg_whatever_the_order() -> None:
    frame = seed_frame(2)
    fedavg_first = pd.concat([frame[frame["method"] == m] for m in ("fedavg", "qsgd", "evolve")])
    s = summarize(fedavg_first)
    assert s["headline_method"] == "qsgd"
    assert s["ratio_vs_fedavg"] is None  # qsgd never reaches 0.82 on seed 2
    # qsgd's best (0.81, round 1, 2 MB): FedAvg passes it in round 2 (5 MB).
    assert s["at_best"] == {"method": "qsgd", "accuracy": 0.81, "method_bytes": 2 * MB,
                            "fedavg_bytes": 5 * MB, "ratio": pytest.approx(2.5)}  # fmt: skip


def test_a_round_exactly_one_point_below_fedavgs_best_reaches_it_in_every_summary() -> None:
    # 0.5016 - 0.01 is 0.49160000000000004 in floating point, a hair above 0.4916: the round
    # at 0.4916 reaches the target (the tolerance), in a run's summary and across seeds.
    frame = rounds({"pemn": ([0.1, 0.4916], 10_000, 10_000),
                    "fedavg": ([0.1, 0.5016], 100_000, 100_000)})  # fmt: skip
    assert 0.5016 - 0.01 > 0.4916
    assert summarize(frame)["methods"]["pemn"]["bytes_to_target"] == 20_000
    assert summarize(frame)["ratio_vs_fedavg"] == pytest.approx(10.0)
    for frames in ({1: frame}, {1: frame, 2: frame}):
        assert S.aggregate(frames)["methods"]["pemn"]["reached_target"] == len(frames)
    # 0.4915 is short.
    short = rounds({"pemn": ([0.1, 0.4915], 10_000, 10_000),
                    "fedavg": ([0.1, 0.5016], 100_000, 100_000)})  # fmt: skip
    assert summarize(short)["methods"]["pemn"]["bytes_to_target"] is None
    assert S.aggregate({1: short, 2: short})["methods"]["pemn"]["reached_target"] == 0


def test_summaries_read_a_methods_rounds_in_any_order() -> None:
    # The rounds of each method shuffled, the methods still in run order (which names the
    # headline method): every sum of bytes runs in round order all the same.
    frame = seed_frame(3)
    shuffled = pd.concat([part.sample(frac=1.0, random_state=3)
                          for _, part in frame.groupby("method", sort=False)])  # fmt: skip
    assert shuffled["round"].tolist() != frame["round"].tolist()
    assert summarize(shuffled) == summarize(frame)
    assert S.aggregate({3: shuffled, 1: seed_frame(1)}) == S.aggregate(
        {3: frame, 1: seed_frame(1)})  # fmt: skip


# -- time and energy ----------------------------------------------------------------------
SECONDS = {"evolve": 10.0, "qsgd": 30.0, "fedavg": 60.0}  # a round, per method


def _timed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the time model's cumulative columns: fixed seconds a round per method,
    2 J a second."""
    frame = frame.copy()
    frame["cumulative_time_s"] = frame["round"] * frame["method"].map(SECONDS)
    frame["cumulative_energy_j"] = 2.0 * frame["cumulative_time_s"]
    return frame


def test_time_and_energy_to_the_target_across_seeds() -> None:
    summary = S.aggregate_time({s: _timed(f) for s, f in group().items()})
    assert summary["target_accuracy"] == pytest.approx(TARGET, abs=1e-12)
    assert summary["seeds"] == [1, 2, 3]
    evolve, qsgd, fed = (summary["methods"][m] for m in ("evolve", "qsgd", "fedavg"))
    # The rounds of the byte summary, at 10 / 30 / 60 s a round.
    assert fed["time_to_target"] == {"1": 120.0, "2": 120.0, "3": 180.0}
    assert evolve["time_to_target"] == {"1": 30.0, "2": 20.0, "3": 40.0}
    assert evolve["energy_to_target"] == {"1": 60.0, "2": 40.0, "3": 80.0}
    assert evolve["less_time_than_fedavg"] == pytest.approx({"1": 4.0, "2": 6.0, "3": 4.5})
    assert evolve["less_time_than_fedavg_min"] == pytest.approx(4.0)
    assert evolve["less_energy_than_fedavg_min"] == pytest.approx(4.0)
    assert evolve["time_to_target_mean"]["mean"] == pytest.approx(30.0)
    assert qsgd["time_to_target"] == {"1": 90.0, "2": None, "3": 60.0}
    assert qsgd["less_time_than_fedavg"] == pytest.approx({"1": 120 / 90, "2": None, "3": 3.0})
    assert qsgd["less_time_than_fedavg_min"] is None and qsgd["reached_target"] == 2
    assert fed["total_time"]["mean"] == pytest.approx((240 + 180 + 240) / 3)
    assert fed["total_energy"]["mean"] == pytest.approx(2 * (240 + 180 + 240) / 3)
    assert "less_time_than_fedavg" not in fed
    # Time budgets: the largest total is 240 s, so 1, 3 and 10 min. At 60 s qsgd's round 2
    # ends exactly on the budget (0.80, 0.81, 0.83): evolve (0.8207) leads it (0.8133) but
    # not on seed 3 (0.812 < 0.83). At 3 min FedAvg's best of rounds 1-3 (0.825, 0.83, 0.88)
    # leads qsgd's (0.86, 0.81, 0.85), not on seed 1.
    rows = summary["time_budgets"]
    assert [r["budget_bytes"] for r in rows] == [60.0, 180.0, 600.0]
    assert rows[0]["methods"]["qsgd"]["per_seed"] == {3: 0.83, 1: 0.80, 2: 0.81}
    assert [(r["leader"], r["runner_up"], r["clear_lead"]) for r in rows] == [
        ("evolve", "qsgd", False), ("fedavg", "qsgd", False), ("fedavg", "qsgd", False)]
    assert rows[1]["lead"] == pytest.approx(np.mean([0.825, 0.83, 0.88]) - 0.84)


def test_the_time_table_in_words() -> None:
    lines = S.time_table(S.aggregate_time({s: _timed(f) for s, f in group().items()})).split("\n")
    assert lines[0] == "3 seed(s) [1, 2, 3]; target 81.17 %"
    tokens = {line[:42].strip(): line[42:].split() for line in lines[2:5]}
    assert tokens == {
        "Evolving prototype, vote counts": ["3/3", "30", "s", "4.0-6.0x", "60", "J", "4.0-6.0x"],
        "QSGD (stochastic levels)": ["2/3", "1", "min", "15", "s", "1.3-3.0x", "(2/3)", "150",
                                     "J", "1.3-3.0x", "(2/3)"],
        "FedAvg (dense floats)": ["3/3", "2", "min", "20", "s", "-", "280", "J", "-"],
    }  # fmt: skip
    assert lines[6] == "| method | ≤ 1 min | ≤ 3 min | ≤ 10 min |"


def test_a_timed_runs_summary_its_sentence_and_its_table() -> None:
    frame = _timed(seed_frame(2))
    summary = TS.summarize_time(frame, fedavg_target(frame))
    # Target 0.82: evolve in round 2 (20 s, 40 J), FedAvg in round 2 (120 s, 240 J).
    assert summary["evolve"] == {
        "time_to_target_s": 20.0, "energy_to_target_j": 40.0, "total_time_s": 40.0,
        "total_energy_j": 80.0, "less_time_than_fedavg_to_target": 6.0,
        "less_energy_than_fedavg_to_target": 6.0}  # fmt: skip
    assert summary["qsgd"]["time_to_target_s"] is None
    assert summary["qsgd"]["less_time_than_fedavg_to_target"] is None
    assert summary["fedavg"]["total_time_s"] == 180.0  # its last round, 3
    assert TS.sentence(summary, "On test links") == (
        "On test links, FedAvg needs 2 min to reach the target, Evolving prototype, vote "
        "counts 20 s, QSGD (stochastic levels) never.")  # fmt: skip
    table = TS.table(summary).split("\n")
    assert table[1][42:].split() == ["20", "s", "40", "J", "6.0x", "40", "s", "80", "J"]
    assert table[3][42:].split() == ["2", "min", "240", "J", "-", "3", "min", "360", "J"]
    without = TS.summarize_time(frame[frame["method"] != "fedavg"], None)
    assert TS.sentence(without, "x") == ""


@pytest.mark.parametrize("seconds, words", [
    (None, "never"), (math.nan, "never"), (0.84, "0.8 s"), (9.94, "9.9 s"), (42.4, "42 s"),
    (60, "1 min"), (185, "3 min 5 s"), (179.6, "3 min"), (725, "12 min"), (3600, "1 h"),
    (4320, "1 h 12 min"), (7260, "2 h 1 min"),
])  # fmt: skip
def test_durations_in_words(seconds: float | None, words: str) -> None:
    assert TS.duration(seconds) == words


@pytest.mark.parametrize("joules, words", [
    (None, "never"), (math.nan, "never"), (450, "450 J"), (999.4, "999 J"), (1000, "1.0 kJ"),
    (12345, "12.3 kJ"),
])  # fmt: skip
def test_energies_in_words(joules: float | None, words: str) -> None:
    assert TS.energy(joules) == words


# -- lever studies --------------------------------------------------------------------------
def _study(root: Path, name: str, target: float, best: dict[str, dict[int, float]],
           wire: dict[str, dict[int, tuple[float, float]]], report: dict[str, dict],
           budgets: list[tuple[float, dict[str, tuple[float, int]]]]) -> Path:  # fmt: skip
    """A seeds-frontier directory as ``bench.accuracy_frontier`` leaves it: a summary.json per
    method and seed under fresh/ (best accuracy, wire bytes up and down) and
    frontier-seeds.json (``report``: method -> bytes_to_target and fewer ratios by seed)."""
    directory = root / name
    for method, per_seed in best.items():
        for seed, acc in per_seed.items():
            run = directory / "fresh" / f"{method}__lr=1" / f"seed-{seed}"
            run.mkdir(parents=True)
            up, down = wire[method][seed]
            entry = {"best_accuracy": acc, "uplink_wire_bytes": up, "downlink_wire_bytes": down}
            (run / "summary.json").write_text(json.dumps({"methods": {method: entry}}))
    methods = {}
    for method, entry in report.items():
        reach = entry["bytes"]
        methods[method] = {"reached_target": sum(v is not None for v in reach.values()),
                           "seeds": len(reach), "bytes_to_target": reach,
                           **({"fewer_bytes_than_fedavg_to_target": entry["fewer"]}
                              if "fewer" in entry else {})}  # fmt: skip
    rows = [{"budget_bytes": size, "methods": {m: {"mean": v, "trained_seeds": t}
                                               for m, (v, t) in cells.items()}}
            for size, cells in budgets]  # fmt: skip
    (directory / "frontier-seeds.json").write_text(json.dumps({"wire": {
        "seeds": [1, 2, 3], "target_accuracy": target, "methods": methods, "budgets": rows}}))
    return directory


def test_a_lever_study_paired_seed_by_seed_with_ranges_and_leaders(tmp_path: Path) -> None:
    from bench import levers

    seeds = (1, 2, 3)
    reached = {"fedavg": {"bytes": {"1": 40e6, "2": 50e6, "3": 60e6}}}
    base = _study(tmp_path, "base", 0.90, best={
        "fedavg": {1: 0.95, 2: 0.94, 3: 0.96},
        "evolve": {1: 0.90, 2: 0.92, 3: 0.91},
        "qsgd": {1: 0.95, 2: 0.94, 3: 0.96},
    }, wire={"fedavg": dict.fromkeys(seeds, (50e6, 50e6)),
             "evolve": dict.fromkeys(seeds, (2e6, 3e6)),
             "qsgd": dict.fromkeys(seeds, (9e6, 9e6))}, report={
        **reached,
        "evolve": {"bytes": {"1": 4e6, "2": 5e6, "3": 6e6},
                   "fewer": {"1": 12.0, "2": 8.0, "3": 10.0}},
        "qsgd": {"bytes": {"1": 8e6, "2": 9e6, "3": 10e6},
                 "fewer": {"1": 2.0, "2": 2.3, "3": 2.1}},
    }, budgets=[(1e5, {"fedavg": (0.1, 0), "evolve": (0.1, 0), "qsgd": (0.1, 0)}),
                (1e6, {"fedavg": (0.1, 0), "evolve": (0.5, 3), "qsgd": (0.1, 0)}),
                (1e7, {"fedavg": (0.2, 3), "evolve": (0.9, 3), "qsgd": (0.9, 3)})])  # fmt: skip
    study = _study(tmp_path, "density", 0.895, best={
        "evolve": {1: 0.93, 2: 0.92, 3: 0.90, 4: 0.99},  # seed 4: not in the baseline
        "qsgd": {1: 0.95, 2: 0.94, 3: 0.96},
    }, wire={"evolve": {1: (2e6, 4e6), 2: (2e6, 4e6), 3: (2e6, 5e6), 4: (1, 1)},
             "qsgd": dict.fromkeys(seeds, (9e6, 9e6))}, report={
        **reached,
        "evolve": {"bytes": {"1": 3e6, "2": None, "3": 2e6},
                   "fewer": {"1": 15.0, "2": None, "3": 15.04}},
        "qsgd": {"bytes": {"1": 8e6, "2": 9e6, "3": 10e6},
                 "fewer": {"1": 2.0, "2": 2.3, "3": 2.1}},
    }, budgets=[(1e5, {"fedavg": (0.1, 0), "evolve": (0.1, 0), "qsgd": (0.1, 0)}),
                (1e6, {"fedavg": (0.1, 0), "evolve": (0.08, 3), "qsgd": (0.1, 0)}),
                (1e7, {"fedavg": (0.2, 3), "evolve": (0.92, 3), "qsgd": (0.93, 3)}),
                (1e8, {"fedavg": (0.95, 3), "evolve": (0.92, 3), "qsgd": (0.93, 3)})])  # fmt: skip
    # A seed run cut short before it was renamed into place: not a seed of the study.
    stale = study / "fresh" / "evolve__lr=1" / "seed-2.partial"
    stale.mkdir()
    (stale / "summary.json").write_text(json.dumps({"methods": {"evolve": {
        "best_accuracy": 0.1, "uplink_wire_bytes": 1, "downlink_wire_bytes": 1}}}))

    text = levers.compare(base, study)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}  # fmt: skip
    assert "Seeds 1, 2, 3; target (FedAvg's seed-mean best − 1 pt): 90.00 % → 89.50 %." in text
    assert rows["fedavg"][1] == "reused from the baseline"
    evolve = rows["evolve"]
    assert evolve[1] == "91.00 ± 1.00 → 91.67 ± 1.53"  # seeds 1-3 only, not seed 4's 0.99
    # Paired, lever - baseline: +3, 0, -1 pt: mean 0.67, sample std 2.08; 0 is no improvement.
    assert evolve[2] == "0.67 ± 2.08" and evolve[3] == "1/3"
    assert evolve[4] == "3/3 → 2/3"
    assert evolve[5] == "5.00 → 2.50"  # the mean over the seeds that reached it
    assert evolve[6] == "8.0–12.0x → 15.0x"  # min-max over seeds; 15.0 and 15.04 print as one
    assert evolve[7].rstrip(" |") == "5.00 ± 0.00 → 6.33 ± 0.58"  # up + down, MB
    qsgd = rows["qsgd"]
    assert qsgd[2] == "0.00 ± 0.00" and qsgd[3] == "0/3"
    assert qsgd[6] == "2.0–2.3x → 2.0–2.3x" and qsgd[5] == "9.00 → 9.00"
    # 0.1 MB: nobody trained on either side, left out. 1 MB: evolve is the only one that
    # trained (even below the others' initial models). 10 MB: evolve and qsgd tie in the
    # baseline (the first listed takes it); qsgd leads the lever. 100 MB: not in the baseline.
    assert text.rstrip().endswith(
        "baseline → lever: ≤ 1 MB: evolve → evolve; ≤ 10 MB: evolve → qsgd.")
    assert "0.1 MB" not in text and "100 MB" not in text
