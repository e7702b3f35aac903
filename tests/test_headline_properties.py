"""Properties of the headline code, on seed groups that hypothesis makes up.

Known answers pin the rules on one group; these check what must hold on *every* group: the
minimum over seeds is one of the seeds' ratios and no larger than any; the order in which
seeds, or a method's rounds, are given changes nothing; scaling every byte scales the
budgets' boundaries and nothing else; a method ahead on every seed leads every budget; a run's
summary and the across-seeds summary of that one run agree; time is bytes on a fixed link.

Accuracies are learning curves on a grid of hundredths (``tests.headline.random_group``), so
ties and rounds exactly on a target are common, not rare. Each property runs 10-15 groups
(``derandomize``: the same groups on every run, so the suite and the mutation runs are
deterministic; the default suite must stay fast on two shared cores).
"""

from __future__ import annotations

import math
import random
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pemn_fl import seeds as S
from pemn_fl import timesummary as TS
from pemn_fl.report import BASELINE, COLUMNS, fedavg_target, first_reach, summarize
from tests.headline import random_group, rounds

FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
# Properties that tabulate many budgets per group (about 2 ms per method, seed and budget).
HEAVY = settings(FEW, max_examples=10)
BYTE_COLUMNS = [c for c in COLUMNS if c.endswith("_bytes")]


@st.composite
def groups(draw: st.DrawFn, max_seeds: int = 4) -> dict[int, pd.DataFrame]:
    """A seed group (``tests.headline.random_group``): FedAvg and one or two other methods."""
    others = draw(st.sampled_from([("evolve",), ("qsgd",), ("evolve", "qsgd")]))
    return random_group(draw, [BASELINE, *others], max_seeds=max_seeds)


def _shuffled(frames: dict[int, pd.DataFrame], rng: random.Random) -> dict[int, pd.DataFrame]:
    """The seeds in another order, and each method's rounds shuffled (methods stay in run
    order, which names the headline method)."""
    order = list(frames)
    rng.shuffle(order)
    out = {}
    for seed in order:
        parts = [part.sample(frac=1.0, random_state=rng.randrange(1000))
                 for _, part in frames[seed].groupby("method", sort=False)]  # fmt: skip
        out[seed] = pd.concat(parts)
    return out


def _round_ends(frames: dict[int, pd.DataFrame], most: int = 6) -> list[float]:
    """The default budgets and up to ``most`` cumulative byte counts that rounds end on (the
    boundaries, where ``<=`` and ``<`` part), spread over their range."""
    ends = sorted({float(c) for per in S._method_frames(frames, "wire").values()
                   for part in per.values() for c in part["cumulative"]})  # fmt: skip
    picked = [ends[i] for i in np.linspace(0, len(ends) - 1, min(most, len(ends))).astype(int)]
    return sorted({*S.BUDGETS, *picked})


@FEW
@given(groups(), st.randoms(use_true_random=False))
def test_the_order_of_seeds_and_of_rounds_changes_nothing(frames: dict[int, pd.DataFrame],
                                                          rng: random.Random) -> None:  # fmt: skip
    assert S.aggregate(_shuffled(frames, rng)) == S.aggregate(frames)


@FEW
@given(groups())
def test_the_minimum_over_seeds_is_one_seeds_ratio_and_no_larger_than_any(
    frames: dict[int, pd.DataFrame],
) -> None:
    summary = S.aggregate(frames)
    for method, m in summary["methods"].items():
        if method == BASELINE:
            continue
        ratios = m["fewer_bytes_than_fedavg_to_target"]
        assert set(ratios) == {str(s) for s in frames}
        low = m["fewer_bytes_than_fedavg_to_target_min"]
        if all(r is not None for r in ratios.values()):
            assert low in ratios.values() and all(low <= r for r in ratios.values())
        else:
            assert low is None
        # A ratio is FedAvg's bytes to the target over the method's, on the same seed.
        fed = summary["methods"][BASELINE]["bytes_to_target"]
        for seed, r in ratios.items():
            ours = m["bytes_to_target"][seed]
            if r is not None:
                assert r == pytest.approx(fed[seed] / ours)
            else:
                assert not ours or not fed[seed]


@HEAVY
@given(groups(), st.integers(2, 1000))
def test_scaling_every_byte_scales_the_budgets_boundaries_and_nothing_else(
    frames: dict[int, pd.DataFrame], k: int,
) -> None:
    # The budgets: the default grid and every cumulative byte count a round ends on.
    budgets = _round_ends(frames)
    scaled = {s: f.assign(**{c: f[c] * k for c in BYTE_COLUMNS}) for s, f in frames.items()}
    plain, big = S.aggregate(frames, budgets=budgets), S.aggregate(scaled,
                                                                   budgets=[b * k for b in budgets])
    assert big["target_accuracy"] == plain["target_accuracy"]
    assert [r["budget_bytes"] for r in big["budgets"]] == [r["budget_bytes"] * k
                                                           for r in plain["budgets"]]
    for ours, theirs in zip(plain["budgets"], big["budgets"], strict=True):
        assert {**ours, "budget_bytes": 0} == {**theirs, "budget_bytes": 0}
    for method, m in plain["methods"].items():
        b = big["methods"][method]
        assert b["bytes_to_target"] == {s: None if v is None else v * k
                                        for s, v in m["bytes_to_target"].items()}
        assert b["round_to_target"] == m["round_to_target"]
        assert b["total_bytes"]["mean"] == pytest.approx(m["total_bytes"]["mean"] * k)
        for key in ("fewer_bytes_than_fedavg_to_target",):
            if key in m:
                assert b[key] == pytest.approx(m[key])


@st.composite
def dominated(draw: st.DrawFn) -> dict[int, pd.DataFrame]:
    """A group plus ``star``: on every seed, as many rounds as any method, no more bytes a
    round than any, and in each round 0.01 above the best any other method had by then."""
    frames = draw(groups())
    per_round = min(int(f[f["round"] > 0][["uplink_wire_bytes", "downlink_wire_bytes"]].sum(
        axis=1).min()) for f in frames.values() if (f["round"] > 0).any()) if any(
        (f["round"] > 0).any() for f in frames.values()) else 4_000  # fmt: skip
    out = {}
    for seed, frame in frames.items():
        by_round = frame.groupby("round")["accuracy"].max().cummax()
        star = [min(1.0, round(a + 0.01, 2)) for a in by_round.tolist()]
        up = draw(st.integers(1_001, max(1_001, per_round // 2)))
        down = max(1_001, min(per_round - up, per_round // 2))
        out[seed] = pd.concat([frame, rounds({"star": (star, up, down)})], ignore_index=True)
    return out


@HEAVY
@given(dominated())
def test_a_method_ahead_on_every_seed_leads_every_budget_anyone_trained_in(
    frames: dict[int, pd.DataFrame],
) -> None:
    summary = S.aggregate(frames, budgets=_round_ends(frames))
    for row in summary["budgets"]:
        trained = any(c["trained_seeds"] for c in row["methods"].values())
        assert row["leader"] == ("star" if trained else None), row["budget_bytes"]
        if row["runner_up"] is not None:
            star, second = row["methods"]["star"], row["methods"][row["runner_up"]]
            assert all(star["per_seed"][s] > second["per_seed"][s] for s in star["per_seed"])
            assert row["lead"] > 0
    star = summary["methods"]["star"]
    fed = summary["methods"][BASELINE]
    assert star["reached_target"] >= fed["reached_target"]
    for seed, r in star["fewer_bytes_than_fedavg_to_target"].items():
        assert r is None or r >= 1.0, seed


@FEW
@given(groups(max_seeds=1))
def test_one_run_and_the_group_of_that_one_run_share_one_reach_rule(
    frames: dict[int, pd.DataFrame],
) -> None:
    (seed, frame), = frames.items()
    run, group = summarize(frame), S.aggregate(frames)
    assert group["target_accuracy"] == run["target_accuracy"] == fedavg_target(frame)
    for method, m in run["methods"].items():
        g = group["methods"][method]
        assert g["bytes_to_target"] == {str(seed): m["bytes_to_target"]}
        assert g["best_accuracy"]["mean"] == m["best_accuracy"]
        assert g["final_accuracy"]["mean"] == m["final_accuracy"]
        assert g["total_bytes"]["mean"] == m["total_bytes"]
        if method != BASELINE:
            ratio = m["fewer_bytes_than_fedavg_to_target"]
            assert g["fewer_bytes_than_fedavg_to_target"] == {str(seed): ratio}
    # Two copies of the run: the seed-mean curve is the run's curve, the same target.
    twice = S.aggregate({seed: frame, seed + 100: frame})
    if run["target_accuracy"] is None:
        assert twice["target_accuracy"] is None
    else:
        assert twice["target_accuracy"] == pytest.approx(run["target_accuracy"], abs=1e-12)
    # The reverse question: each side's bytes at the headline method's best are its own
    # first round at or above it.
    best = run["at_best"]
    if best is not None:
        part = S._method_frames(frames, run["bytes_level"])[best["method"]][seed]
        hit = first_reach(part, best["accuracy"])
        assert hit is not None and best["method_bytes"] == int(hit["cumulative"])


@HEAVY
@given(groups())
def test_a_budget_cell_never_falls_as_the_budget_grows(frames: dict[int, pd.DataFrame]) -> None:
    rows = S.aggregate(frames, budgets=_round_ends(frames))["budgets"]
    for before, after in zip(rows, rows[1:], strict=False):
        for method, cell in before["methods"].items():
            later = after["methods"][method]
            assert all(later["per_seed"][s] >= v for s, v in cell["per_seed"].items())
            assert later["trained_seeds"] >= cell["trained_seeds"]


@HEAVY
@given(groups(), st.floats(0.01, 100.0))
def test_time_on_a_fixed_link_is_bytes_over_its_rate(frames: dict[int, pd.DataFrame],
                                                     rate_mb_s: float) -> None:  # fmt: skip
    """Rounds timed as their wire bytes over one rate (2 W): time to the target is bytes to it
    over the rate, FedAvg's multiple the same, the time budgets the byte budgets."""
    rate = rate_mb_s * 1e6

    def timed(f: pd.DataFrame) -> pd.DataFrame:
        f = S.with_cumulative(f.sort_values("round", kind="stable"), "wire")
        return f.assign(cumulative_time_s=f["cumulative"] / rate,
                        cumulative_energy_j=2.0 * f["cumulative"] / rate)  # fmt: skip

    budgets = [b / rate for b in S.BUDGETS]
    by_bytes = S.aggregate(frames)
    by_time = S.aggregate_time({s: timed(f) for s, f in frames.items()}, budgets=budgets)
    assert by_time["target_accuracy"] == by_bytes["target_accuracy"]
    for method, b in by_bytes["methods"].items():
        t = by_time["methods"][method]
        assert t["reached_target"] == b["reached_target"]
        assert t["time_to_target"] == pytest.approx(
            {s: None if v is None else v / rate for s, v in b["bytes_to_target"].items()})
        assert t["energy_to_target"] == pytest.approx(
            {s: None if v is None else 2 * v / rate for s, v in b["bytes_to_target"].items()})
        if method != BASELINE:
            assert t["less_time_than_fedavg"] == pytest.approx(
                b["fewer_bytes_than_fedavg_to_target"])
            assert t["less_energy_than_fedavg_min"] == pytest.approx(
                b["fewer_bytes_than_fedavg_to_target_min"])
    assert [r["leader"] for r in by_time["time_budgets"]] == [r["leader"]
                                                            for r in by_bytes["budgets"]]
    assert [r["clear_lead"] for r in by_time["time_budgets"]] == [
        r["clear_lead"] for r in by_bytes["budgets"]]  # fmt: skip


@FEW
@given(groups(max_seeds=1), st.floats(0.01, 100.0))
def test_a_timed_run_reaches_the_target_in_the_round_its_bytes_do(
    frames: dict[int, pd.DataFrame], rate_mb_s: float,
) -> None:
    (_, frame), = frames.items()
    rate = rate_mb_s * 1e6
    f = S.with_cumulative(frame, "wire")
    timed = f.assign(cumulative_time_s=f["cumulative"] / rate, cumulative_energy_j=f["cumulative"])
    target = fedavg_target(frame)
    by_time, by_bytes = TS.summarize_time(timed, target), summarize(frame)
    for method, t in by_time.items():
        b = by_bytes["methods"][method]
        expected = None if b["bytes_to_target"] is None else b["bytes_to_target"] / rate
        assert t["time_to_target_s"] == pytest.approx(expected)
        assert t["energy_to_target_j"] == b["bytes_to_target"]
        assert t["total_time_s"] == pytest.approx(b["total_bytes"] / rate)
        if method != BASELINE:
            assert t["less_time_than_fedavg_to_target"] == pytest.approx(
                b.get("fewer_bytes_than_fedavg_to_target"))


@FEW
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_mean_and_sample_std_of_any_values_in_any_order(values: list[float],
                                                        rng: random.Random) -> None:  # fmt: skip
    s = S.stats([*values, None, math.nan])  # missing values are left out
    assert s["n"] == len(values)
    assert min(values) - 1e-12 <= s["mean"] <= max(values) + 1e-12
    assert s["mean"] == pytest.approx(statistics.fmean(values))
    assert s["std"] == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0,
                                     abs=1e-12)  # fmt: skip
    shuffled = values[:]
    rng.shuffle(shuffled)
    assert S.stats(shuffled)["std"] == pytest.approx(s["std"], abs=1e-12)
    assert S.stats([]) == {"mean": None, "std": None, "n": 0}


@FEW
@given(st.floats(0.0, 400_000.0))
def test_a_duration_in_words_says_the_same_time(seconds: float) -> None:
    words = TS.duration(seconds)
    units = {"h": 3600, "min": 60, "s": 1}
    parts = words.split()
    said = sum(float(n) * units[u] for n, u in zip(parts[::2], parts[1::2], strict=True))
    # Seconds are dropped past 10 min, minutes are kept past an hour: at most a minute off.
    assert abs(said - seconds) <= (0.5 if seconds < 600 else 60.0), words
    assert np.isfinite(said)
