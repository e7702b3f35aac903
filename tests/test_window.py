"""The windowed target: trailing means by hand, the seeds summary on smoothed frames, and a
horizon cut that is exactly a shorter run."""

from __future__ import annotations

import pandas as pd
import pytest

from pemn_fl import seeds as S
from pemn_fl import window as W


def _frame(method: str, accuracies: list[float], per_round: int = 1000) -> pd.DataFrame:
    return pd.DataFrame({
        "method": method, "round": range(len(accuracies)), "accuracy": accuracies,
        "uplink_bytes": [0] + [per_round] * (len(accuracies) - 1),
        "downlink_bytes": [0] + [per_round] * (len(accuracies) - 1),
        "clients_replied": [0] + [2] * (len(accuracies) - 1),
    })  # fmt: skip


def test_each_round_is_the_mean_of_its_last_rounds_and_round_0_stays() -> None:
    frame = pd.concat([_frame("a", [0.1, 0.6, 0.8, 0.7, 0.9]),
                       _frame("b", [0.2, 0.5, 0.5, 1.0, 0.0])], ignore_index=True)
    out = W.smoothed(frame, window=2)
    assert list(out.index) == list(frame.index)  # rows where they were
    a = out[out["method"] == "a"]["accuracy"].tolist()
    assert a == pytest.approx([0.1, 0.6, 0.7, 0.75, 0.8])  # round 1: one round so far
    b = out[out["method"] == "b"]["accuracy"].tolist()
    assert b == pytest.approx([0.2, 0.5, 0.5, 0.75, 0.5])
    three = W.smoothed(frame, window=3)[lambda f: f["method"] == "a"]["accuracy"].tolist()
    assert three == pytest.approx([0.1, 0.6, 0.7, 0.7, 0.8])
    assert W.smoothed(frame, window=1)["accuracy"].tolist() == frame["accuracy"].tolist()
    with pytest.raises(ValueError):
        W.smoothed(frame, window=0)


def test_one_lucky_round_sets_the_best_round_target_but_not_the_windowed_one() -> None:
    # FedAvg jumps to 0.95 in its last round only; the method climbs steadily to 0.90.
    fed = [0.1, 0.80, 0.85, 0.86, 0.85, 0.86, 0.95]
    ours = [0.1, 0.70, 0.80, 0.84, 0.85, 0.86, 0.86]
    frames = {s: pd.concat([_frame("fedavg", fed), _frame("ours", ours, 100)],
                           ignore_index=True) for s in (1, 2)}  # fmt: skip
    best = S.aggregate(frames, level="message")
    assert best["target_accuracy"] == pytest.approx(0.94)
    assert best["methods"]["ours"]["reached_target"] == 0
    windowed = S.aggregate(W.smoothed_frames(frames, window=3), level="message")
    # FedAvg's smoothed maximum: (0.85 + 0.86 + 0.95) / 3 = 0.8867 at round 6; - 1 pt.
    assert windowed["target_accuracy"] == pytest.approx((0.85 + 0.86 + 0.95) / 3 - 0.01)
    # Ours, smoothed: round 5 (0.84 + 0.85 + 0.86) / 3 = 0.85 < 0.8767; round 6: 0.8567 <.
    assert windowed["methods"]["ours"]["reached_target"] == 0
    # Cutting the horizon by the lucky round moves the best-round target by 8 points...
    cut = S.aggregate(W.truncated(frames, 5), level="message")["target_accuracy"]
    assert best["target_accuracy"] - cut == pytest.approx(0.09)
    # ... and the windowed one by 3: a window of 3 dilutes the lucky round to a third. Cut,
    # the smoothed maximum is round 5's (0.86 + 0.85 + 0.86) / 3, so the move is (0.95 - 0.86) / 3.
    cut_w = S.aggregate(W.smoothed_frames(W.truncated(frames, 5), 3), level="message")
    assert windowed["target_accuracy"] - cut_w["target_accuracy"] == pytest.approx(
        (0.95 - 0.86) / 3, abs=1e-9)


def test_a_cut_run_is_the_first_rounds_and_too_short_a_run_is_refused() -> None:
    frames = {1: pd.concat([_frame("fedavg", [0.1, 0.5, 0.6, 0.7]),
                            _frame("ours", [0.1, 0.4, 0.5, 0.6])], ignore_index=True)}
    cut = W.truncated(frames, 2)[1]
    assert sorted(set(cut["round"])) == [0, 1, 2] and len(cut) == 6
    with pytest.raises(ValueError, match="fewer than 5 rounds"):
        W.truncated(frames, 5)
