"""A target no single round decides: accuracy on a trailing window of rounds.

At 10 of 20 Dirichlet clients per round, test accuracy swings by about a point from round to
round: the client sample of one round suits everyone, the next one does not. A target set
by the *best round* (FedAvg's seed-mean maximum - 1 pt) then moves with the horizon (one
round less lowered the Fashion-MNIST target by 0.35 pt), and a method "reaches" it on one
lucky round. Here each round's accuracy is replaced by the mean of the last ``WINDOW``
rounds (fewer in the first rounds, where fewer exist); the target becomes FedAvg's
seed-mean *smoothed* maximum - 1 pt, and a method reaches it when its own smoothed curve
does. The across-seeds summary (``pemn_fl.seeds.aggregate``) then reads smoothed frames
unchanged, so every rule it applies (target, reach, ratios, budgets) holds for both.

``truncated`` cuts runs at a horizon: a run of 100 rounds read at 30 is exactly a 30-round
run (the client sample and every draw are seeded per round, and with a constant step size
nothing depends on the number of rounds), which is how the short-horizon view is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

WINDOW = 5  # rounds


def smoothed(frame: pd.DataFrame, window: int = WINDOW) -> pd.DataFrame:
    """``frame`` (rounds of one or more methods) with each training round's accuracy the
    mean of that method's last ``window`` training rounds; round 0 (the untrained model)
    and every other column as they were."""
    if window < 1:
        raise ValueError(f"window {window}: at least one round")
    out = frame.sort_values(["method", "round"], kind="stable").copy()
    trained = out["round"] > 0
    out.loc[trained, "accuracy"] = (out[trained].groupby("method", sort=False)["accuracy"]
                                    .transform(lambda s: s.rolling(window, min_periods=1)
                                               .mean()))  # fmt: skip
    return out.loc[frame.index]  # the caller's row order


def smoothed_frames(frames: Mapping[int, pd.DataFrame],
                    window: int = WINDOW) -> dict[int, pd.DataFrame]:  # fmt: skip
    """Every seed's rounds, smoothed (``smoothed``)."""
    return {seed: smoothed(frame, window) for seed, frame in frames.items()}


def truncated(frames: Mapping[int, pd.DataFrame], horizon: int) -> dict[int, pd.DataFrame]:
    """Every seed's rounds up to round ``horizon`` (``ValueError`` if a run stops earlier)."""
    out = {}
    for seed, frame in frames.items():
        short = frame.groupby("method")["round"].max()
        if (short < horizon).any():
            raise ValueError(f"seed {seed}: {', '.join(short[short < horizon].index)} ran "
                             f"fewer than {horizon} rounds")  # fmt: skip
        out[seed] = frame[frame["round"] <= horizon].reset_index(drop=True)
    return out
