"""Score voting: how the server turns clients' masks into the next global mask.

Each reply is a vote per edge (1 = keep). The server tallies ``t_e = sum_i w_i m_ie / sum_i
w_i`` (``w_i`` = the client's example count, or 1 with uniform weighting), folds it into a
server-side score state -- an exponential moving average ``S <- beta S + (1 - beta) t`` so
weak but consistent votes accumulate over rounds -- and keeps, per layer, exactly the
top-k edges of ``S``. The state never travels; only the resulting mask does.

Ties are broken deterministically so every replay of a run gives the same mask: first by
the previous global mask (an edge already kept stays kept), then by a seeded random order.

``--trim-votes BETA`` (``outliers``) first drops the ``BETA`` share of the round's votes that
lie farthest (L1) from the coordinate-wise median of all of them, the way a trimmed mean
drops extreme values: a minority of clients voting against what the others learned (the
``--byzantine`` attack: complemented masks) is the farthest from that median.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from pemn_fl.masked import num_kept
from pemn_fl.prototype import derived_seed

log = logging.getLogger("pemn_fl.server")
T = TypeVar("T")
Mask = list[np.ndarray]  # one flat bool array per masked layer


def tally(masks: Sequence[Mask], weights: Sequence[float] | None = None) -> list[np.ndarray]:
    """Weighted vote fraction per edge, in [0, 1]. ``masks[i][l]`` is client i's layer l."""
    if not masks:
        raise ValueError("tally needs at least one mask")
    w = np.ones(len(masks)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(masks),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(masks)} non-negative numbers with a positive sum")
    # Integer weights (example counts, or 1 each) are summed exactly in int64, so the tally
    # does not depend on the order replies arrive in (floating-point sums would, and a
    # near-tie could then flip an edge between two runs of the same experiment).
    exact = bool(np.all(w == np.round(w)))
    dtype = np.int64 if exact else np.float64
    w_sum = w.astype(dtype) if exact else w
    out = [np.zeros(layer.size, dtype=dtype) for layer in masks[0]]
    for wi, mask in zip(w_sum, masks, strict=True):
        for acc, layer in zip(out, mask, strict=True):
            acc += wi * layer.reshape(-1).astype(dtype)
    total = float(w.sum())
    return [acc / total for acc in out]


def topk_with_ties(
    scores: np.ndarray, k: int, previous: np.ndarray | None, seed: int, tag: str
) -> np.ndarray:
    """Bool mask of the ``k`` highest ``scores``; ties: previous mask first, then seeded order."""
    n = scores.size
    if not 0 <= k <= n:
        raise ValueError(f"k={k} out of range for {n} edges")
    rng = np.random.default_rng(derived_seed(seed, tag))
    random_rank = rng.permutation(n)
    prev = np.zeros(n, dtype=np.int8) if previous is None else previous.reshape(-1).astype(np.int8)
    # lexsort sorts by the last key first; negate to get descending score, previous first.
    order = np.lexsort((random_rank, -prev, -scores.reshape(-1)))
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


def update_state(
    state: list[np.ndarray] | None, votes: list[np.ndarray], momentum: float
) -> list[np.ndarray]:
    """``S <- momentum * S + (1 - momentum) * votes``; the first round just takes the votes."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"server momentum must be in [0, 1), got {momentum}")
    if state is None:
        return [v.copy() for v in votes]
    return [momentum * s + (1.0 - momentum) * v for s, v in zip(state, votes, strict=True)]


def global_mask(
    state: list[np.ndarray], previous: Mask | None, keep: float, seed: int, server_round: int
) -> Mask:
    """Per-layer top-k of the server state, with deterministic tie-breaking."""
    return [
        topk_with_ties(
            s,
            num_kept(s.size, keep),
            None if previous is None else previous[i],
            seed,
            f"vote/{server_round}/{i}",
        )
        for i, s in enumerate(state)
    ]


def outliers(masks: Sequence[Sequence[np.ndarray]], trim: float) -> set[int]:
    """Indices of the ``round(trim * n)`` votes farthest (L1) from the coordinate-wise median.

    Works for 0/1 masks (the median is the majority) and ternary ones alike; at least one
    vote is always kept, and ties in distance go to the earlier index (deterministic)."""
    n = len(masks)
    drop = min(n - 1, math.floor(trim * n + 0.5))
    if drop <= 0:
        return set()
    distance = np.zeros(n)
    for layer in range(len(masks[0])):
        stack = np.stack([np.asarray(m[layer], dtype=np.float32) for m in masks])
        distance += np.abs(stack - np.median(stack, axis=0)).sum(axis=1)
    order = sorted(range(n), key=lambda i: (-distance[i], i))
    return set(order[:drop])


def trim_votes(kept: list[T], masks: list[list[np.ndarray]], share: float, server_round: int
               ) -> tuple[list[T], int]:  # fmt: skip
    """``--trim-votes``: ``kept`` without the votes ``outliers`` picks in ``masks``
    (one per item, same order), and how many were left out. They are valid payloads, left
    out of the vote; callers count them as rejected."""
    dropped = outliers(masks, share) if kept else set()
    if dropped:
        log.info("round %s: %d outlying votes trimmed", server_round, len(dropped))
    return [item for i, item in enumerate(kept) if i not in dropped], len(dropped)
