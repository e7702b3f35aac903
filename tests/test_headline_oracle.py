"""The seeds summary against an oracle: the same numbers recomputed from the rounds.csv files
by a few lines of plain pandas, in one long table, on random small groups.

The oracle shares no code with ``pemn_fl.seeds`` or ``pemn_fl.report``: it reads the CSV
files itself, sums bytes with one ``groupby(["seed", "method"]).cumsum()``, takes the
seed-mean curve with one ``pivot``, and ranks a budget's methods with one sort. Where the two
disagree, one of them is wrong, and the oracle is short enough to check by eye.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pemn_fl import seeds as S
from tests.headline import random_group

NEAR = 1e-9  # accuracies are hundredths: anything closer than this is the same number


def oracle(group: Path, budgets: list[float]) -> dict:
    """The seeds summary of the ``seed-<s>/rounds.csv`` files under ``group``, in pandas."""
    frames = {int(p.name[5:]): pd.read_csv(p / "rounds.csv") for p in group.glob("seed-*")}
    wire = all("uplink_wire_bytes" in f.columns for f in frames.values())
    up, down = (("uplink_wire_bytes", "downlink_wire_bytes") if wire
                else ("uplink_bytes", "downlink_bytes"))  # fmt: skip
    order = list(dict.fromkeys(frames[min(frames)]["method"]))  # run order, first seed's file
    long = pd.concat([f.assign(seed=s) for s, f in frames.items()], ignore_index=True)
    long = long.sort_values(["seed", "method", "round"], kind="stable")
    long["sent"] = long[up] + long[down]
    long["cum"] = long.groupby(["seed", "method"])["sent"].cumsum()

    fed = long[long["method"] == "fedavg"]
    target = None
    if not fed.empty and fed["clients_replied"].sum() > 0:
        if fed["seed"].nunique() == 1:  # one run: its best trained round
            trained = fed[fed["round"] > 0]["accuracy"]
        else:  # several: the rounds every seed has, averaged
            curve = fed.pivot(index="round", columns="seed", values="accuracy").dropna()
            trained = curve.mean(axis=1)
            trained = trained[trained.index > 0]
        target = None if trained.empty else float(trained.max()) - 0.01

    def reach(part: pd.DataFrame) -> tuple[int | None, int | None]:
        hit = part[part["accuracy"] >= target - NEAR] if target is not None else part[:0]
        return (None, None) if hit.empty else (int(hit["round"].iloc[0]), int(hit["cum"].iloc[0]))

    def spread(values: pd.Series) -> dict:
        return {"mean": float(values.mean()),
                "std": float(values.std()) if len(values) > 1 else 0.0, "n": len(values)}

    methods = {}
    fed_bytes = {s: reach(p)[1] for s, p in fed.groupby("seed")}
    for method in order:
        parts = dict(tuple(long[long["method"] == method].groupby("seed")))
        hits = {s: reach(p) for s, p in parts.items()}
        entry = {
            "best_accuracy": spread(pd.Series([p["accuracy"].max() for p in parts.values()])),
            "final_accuracy": spread(pd.Series([p["accuracy"].iloc[-1] for p in parts.values()])),
            "total_bytes": spread(pd.Series([p["cum"].iloc[-1] for p in parts.values()])),
            "round_to_target": {str(s): r for s, (r, _) in hits.items()},
            "bytes_to_target": {str(s): b for s, (_, b) in hits.items()},
            "reached_target": sum(b is not None for _, b in hits.values()),
            "seeds": len(parts),
        }
        if method != "fedavg":
            ratios = {str(s): fed_bytes[s] / b if b and fed_bytes.get(s) else None
                      for s, (_, b) in hits.items()}  # fmt: skip
            entry["fewer_bytes_than_fedavg_to_target"] = ratios
            entry["fewer_bytes_than_fedavg_to_target_min"] = (
                None if None in ratios.values() else min(ratios.values()))
        methods[method] = entry

    rows = []
    for budget in [b for b in budgets if b <= 3 * long["cum"].max()]:
        within = long[long["cum"] <= budget]
        best = within.pivot_table(index="method", columns="seed", values="accuracy",
                                  aggfunc="max").reindex(order)  # fmt: skip
        trained = within[within["round"] > 0].groupby("method")["seed"].nunique().reindex(
            order, fill_value=0)  # fmt: skip
        table = pd.DataFrame({"mean": best.mean(axis=1), "trained": trained, "pos": range(
            len(order))})  # fmt: skip
        table["std"] = best.std(axis=1).fillna(0.0)  # pandas: the sample std
        # Methods that trained first, then the best mean first; a tie keeps the run order.
        table["untrained"] = table["trained"] == 0
        table = table.sort_values(["untrained", "mean", "pos"], ascending=[True, False, True])
        ranked = list(table.index)
        leader = ranked[0] if table["trained"].iloc[0] > 0 else None
        runner = ranked[1] if leader and len(ranked) > 1 else None
        row = {"budget_bytes": budget, "best": best, "table": table, "leader": leader,
               "runner_up": runner, "lead": None, "clear_lead": None}
        if runner is not None:
            a, b = best.loc[leader], best.loc[runner]
            row["lead"] = table.loc[leader, "mean"] - table.loc[runner, "mean"]
            row["clear_lead"] = None if len(best.columns) < 2 else bool(
                (a > b).all() and row["lead"] > max(table.loc[leader, "std"],
                                                    table.loc[runner, "std"]))  # fmt: skip
        rows.append(row)
    return {"seeds": sorted(frames), "bytes_level": "wire" if wire else "message",
            "target_accuracy": target, "methods": methods, "budgets": rows}


def close(ours: object, theirs: object, where: str = "") -> None:
    """Equal, floats to 1e-9 relative (the two sum in different orders)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), where
        for key in theirs:
            close(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(theirs, float) and theirs is not None:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), where
    else:
        assert ours == theirs, where


def _tied(means: pd.Series, a: str | None, b: str | None) -> bool:
    """Both methods named and their means the same to 1e-9."""
    return a is not None and b is not None and abs(means[a] - means[b]) < NEAR


@st.composite
def group_files(draw: st.DrawFn) -> dict[int, pd.DataFrame]:
    """1-4 seeds of FedAvg and 1-3 other methods (``tests.headline.random_group``); now and
    then a seed recorded before the wire level, or a FedAvg that never took an update."""
    others = draw(st.sampled_from([["evolve"], ["qsgd", "evolve"], ["pemn", "evolve", "qsgd"]]))
    frames = random_group(draw, ["fedavg", *others], old=True)
    if draw(st.sampled_from([False] * 9 + [True])):  # every FedAvg reply lost to faults
        for frame in frames.values():
            frame.loc[frame["method"] == "fedavg", "clients_replied"] = 0
    return frames


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(group_files())
def test_the_seeds_summary_is_what_plain_pandas_makes_of_the_files(
    frames: dict[int, pd.DataFrame],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        group = Path(tmp)
        for seed, frame in frames.items():
            (group / f"seed-{seed}").mkdir()
            frame.to_csv(group / f"seed-{seed}" / "rounds.csv", index=False)
        # Budgets: the default grid, and some byte counts rounds end on (at either level).
        ends = sorted({float(c) for f in frames.values() for up, down in (
            ("uplink_bytes", "downlink_bytes"), ("uplink_wire_bytes", "downlink_wire_bytes"))
            if up in f.columns for c in f.assign(sent=f[up] + f[down]).groupby("method")[
                "sent"].cumsum()})  # fmt: skip
        budgets = sorted({*S.BUDGETS, *ends[:: max(1, len(ends) // 4)]})
        ours = S.aggregate(S.load(S.seed_dirs(group)), budgets=budgets)
        theirs = oracle(group, budgets)

    for key in ("seeds", "bytes_level"):
        assert ours[key] == theirs[key]
    close(ours["target_accuracy"], theirs["target_accuracy"], "target")
    close(ours["methods"], theirs["methods"], "methods")
    assert [r["budget_bytes"] for r in ours["budgets"]] == [r["budget_bytes"]
                                                           for r in theirs["budgets"]]
    for row, want in zip(ours["budgets"], theirs["budgets"], strict=True):
        where = f"budget {row['budget_bytes']}"
        for method, cell in row["methods"].items():
            close(cell["per_seed"], {int(s): float(v) for s, v in want["best"].loc[method].items()},
                  f"{where} {method}")  # fmt: skip
            assert cell["trained_seeds"] == want["table"].loc[method, "trained"], where
            close(cell["mean"], float(want["table"].loc[method, "mean"]), where)
            close(cell["std"], float(want["table"].loc[method, "std"]), where)
        # Means the same to 1e-9 are a tie, which float rounding may break either way.
        means = want["table"]["mean"]
        if want["leader"] is None or not _tied(means, row["leader"], want["leader"]):
            assert row["leader"] == want["leader"], where
        if want["runner_up"] is None or not _tied(means, row["runner_up"], want["runner_up"]):
            assert row["runner_up"] == want["runner_up"], where
            if want["lead"] is not None:
                close(row["lead"], float(want["lead"]), where)
                assert row["clear_lead"] == want["clear_lead"], where


def test_the_oracle_itself_on_the_hand_made_group(tmp_path: Path) -> None:
    """The oracle gives the hand-made group's known answers (tests/test_headline_known.py),
    so it is no copy of a wrong rule."""
    from tests.headline import group

    for seed, frame in group().items():
        (tmp_path / f"seed-{seed}").mkdir()
        frame.to_csv(tmp_path / f"seed-{seed}" / "rounds.csv", index=False)
    theirs = oracle(tmp_path, [0.3e6, 3e6, 10e6])
    assert theirs["target_accuracy"] == pytest.approx((0.825 + 0.83 + 0.81) / 3 - 0.01)
    assert theirs["methods"]["evolve"]["bytes_to_target"] == {"1": 750_000, "2": 500_000,
                                                              "3": 1_000_000}  # fmt: skip
    assert theirs["methods"]["qsgd"]["fewer_bytes_than_fedavg_to_target_min"] is None
    assert [(r["leader"], r["runner_up"], r["clear_lead"]) for r in theirs["budgets"]] == [
        ("evolve", "qsgd", True), ("evolve", "qsgd", False), ("fedavg", "qsgd", False)]
    assert np.isclose(theirs["budgets"][1]["table"].loc["qsgd", "std"], 0.0378594, atol=1e-7)
