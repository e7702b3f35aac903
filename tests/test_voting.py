"""Tests for methods/frames/voting.py: tallies, deterministic tie-breaking, the EMA state,
global masks."""

from __future__ import annotations

import numpy as np
import pytest

from pemn_fl.masked import num_kept
from pemn_fl.methods.frames.voting import global_mask, tally, topk_with_ties, update_state


def as_masks(*clients: list[list[int]]) -> list[list[np.ndarray]]:
    return [[np.array(layer, dtype=bool) for layer in client] for client in clients]


# --------------------------------------------------------------------------------------------
# tally
# --------------------------------------------------------------------------------------------


def test_tally_weighted_by_hand() -> None:
    masks = as_masks(
        [[1, 0, 1, 0], [1, 1]],
        [[1, 1, 0, 0], [0, 1]],
        [[0, 1, 1, 0], [0, 0]],
    )
    votes = tally(masks, [1, 2, 1])
    # Normalised weights 1/4, 1/2, 1/4 are exact in binary, so the sums are exact too.
    np.testing.assert_array_equal(votes[0], [0.75, 0.75, 0.5, 0.0])
    np.testing.assert_array_equal(votes[1], [0.25, 0.75])
    assert all(v.dtype == np.float64 for v in votes)


def test_tally_uniform_weights_by_hand() -> None:
    masks = as_masks([[1, 0, 1, 1]], [[1, 1, 0, 1]], [[1, 0, 0, 1]], [[0, 0, 0, 1]])
    expected = [0.75, 0.25, 0.25, 1.0]
    np.testing.assert_allclose(tally(masks)[0], expected)
    np.testing.assert_allclose(tally(masks, [5, 5, 5, 5])[0], expected)


def test_tally_flattens_layers_and_zero_weight_client_does_not_count() -> None:
    a = [np.array([[True, False], [False, True]])]
    b = [np.array([[False, False], [True, True]])]
    votes = tally([a, b], [0.0, 3.0])
    np.testing.assert_array_equal(votes[0], [0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("weights", "n_clients"),
    [
        ([1.0, -1.0], 2),  # negative
        ([0.0, 0.0], 2),  # zero sum
        ([1.0], 2),  # wrong length
        ([1.0, 1.0, 1.0], 2),
    ],
)
def test_tally_bad_weights_raise(weights: list[float], n_clients: int) -> None:
    masks = as_masks(*([[[1, 0]]] * n_clients))
    with pytest.raises(ValueError, match="non-negative numbers with a positive sum"):
        tally(masks, weights)


def test_tally_empty_raises() -> None:
    with pytest.raises(ValueError, match="at least one mask"):
        tally([])


# --------------------------------------------------------------------------------------------
# topk_with_ties
# --------------------------------------------------------------------------------------------


def test_clear_winners_ignore_previous_and_seed() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    for seed in range(5):
        for previous in (None, np.array([1, 0, 1, 0, 1], dtype=bool)):
            mask = topk_with_ties(scores, 2, previous, seed, "t")
            assert mask.tolist() == [False, True, False, True, False]


def test_ties_broken_by_previous_mask_first() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.9, 0.1])
    previous = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    for seed in range(20):
        mask = topk_with_ties(scores, 3, previous, seed, f"layer{seed}")
        # 0.9 wins outright; among the four 0.5s the previously kept ones (2, 3) win.
        # Edge 5 was kept before but its score is lower: the score decides first.
        assert mask.tolist() == [False, False, True, True, True, False]


def test_remaining_ties_broken_by_seeded_order() -> None:
    scores = np.array([0.5] * 6 + [0.9])
    previous = np.array([0, 1, 0, 0, 0, 0, 0], dtype=bool)
    results = set()
    for seed in range(30):
        mask = topk_with_ties(scores, 3, previous, seed, "x")
        assert int(mask.sum()) == 3
        assert mask[6] and mask[1]  # clear winner, then the previous mask
        results.add(tuple(np.flatnonzero(mask)))
        # Deterministic for the same seed and tag.
        assert np.array_equal(mask, topk_with_ties(scores, 3, previous, seed, "x"))
    assert len(results) > 1, "the remaining tie must depend on the seed"


def test_large_tie_set_depends_on_seed_and_tag() -> None:
    scores = np.zeros(1000)
    a = topk_with_ties(scores, 500, None, 0, "vote/1/0")
    assert int(a.sum()) == 500
    assert np.array_equal(a, topk_with_ties(scores, 500, None, 0, "vote/1/0"))
    assert not np.array_equal(a, topk_with_ties(scores, 500, None, 1, "vote/1/0"))
    assert not np.array_equal(a, topk_with_ties(scores, 500, None, 0, "vote/2/0"))
    # Not simply the lowest indices (that would bias every tie toward early edges).
    assert not a[:500].all()


def test_previous_mask_may_be_shaped() -> None:
    scores = np.zeros((2, 3))
    previous = np.array([[False, False, True], [True, False, False]])
    mask = topk_with_ties(scores, 2, previous, 0, "t")
    assert mask.shape == (6,)
    assert mask.tolist() == [False, False, True, True, False, False]


@pytest.mark.parametrize("k", [0, 1, 7, 13, 20])
def test_topk_with_ties_keeps_exactly_k(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 3, size=20).astype(float) / 2  # many ties
    previous = rng.random(20) < 0.5
    mask = topk_with_ties(scores, k, previous, 3, "t")
    assert mask.dtype == bool and int(mask.sum()) == k
    if 0 < k < 20:
        assert scores[mask].min() >= scores[~mask].max()


@pytest.mark.parametrize("k", [-1, 6])
def test_topk_with_ties_k_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match=f"k={k} out of range for 5 edges"):
        topk_with_ties(np.zeros(5), k, None, 0, "t")


# --------------------------------------------------------------------------------------------
# update_state / global_mask
# --------------------------------------------------------------------------------------------


def test_update_state_ema_by_hand() -> None:
    votes1 = [np.array([1.0, 0.0, 0.5]), np.array([0.25])]
    state = update_state(None, votes1, 0.5)
    np.testing.assert_array_equal(state[0], [1.0, 0.0, 0.5])
    state[0][0] = 42.0  # the first state is a copy, not the votes themselves
    assert votes1[0][0] == 1.0

    state = [np.array([0.2, 0.8, 0.5]), np.array([1.0])]
    votes2 = [np.array([1.0, 0.0, 0.5]), np.array([0.0])]
    new = update_state(state, votes2, 0.5)
    np.testing.assert_allclose(new[0], [0.6, 0.4, 0.5])
    np.testing.assert_allclose(new[1], [0.5])
    # two rounds: 0.5 * 0.6 + 0.5 * 0 = 0.3
    np.testing.assert_allclose(
        update_state(new, [np.zeros(3), np.ones(1)], 0.5)[0], [0.3, 0.2, 0.25]
    )


def test_update_state_momentum_zero_takes_votes_and_other_momenta() -> None:
    state = [np.array([0.2, 0.8])]
    votes = [np.array([1.0, 0.0])]
    np.testing.assert_array_equal(update_state(state, votes, 0.0)[0], [1.0, 0.0])
    np.testing.assert_allclose(update_state(state, votes, 0.9)[0], [0.28, 0.72])


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_update_state_momentum_out_of_range(momentum: float) -> None:
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        update_state(None, [np.zeros(2)], momentum)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.77, 1.0])
def test_global_mask_keeps_num_kept_per_layer(keep: float) -> None:
    rng = np.random.default_rng(0)
    sizes = [1, 10, 37, 400]
    state = [np.round(rng.random(n), 1) for n in sizes]  # rounded: plenty of ties
    previous = [rng.random(n) < keep for n in sizes]
    for prev in (None, previous):
        mask = global_mask(state, prev, keep, seed=7, server_round=3)
        assert [m.size for m in mask] == sizes
        assert [int(m.sum()) for m in mask] == [num_kept(n, keep) for n in sizes]
        for s, m in zip(state, mask, strict=True):
            if 0 < m.sum() < m.size:
                assert s[m].min() >= s[~m].max()
        again = global_mask(state, prev, keep, seed=7, server_round=3)
        assert all(np.array_equal(a, b) for a, b in zip(mask, again, strict=True))


def test_global_mask_ties_use_previous_then_round_specific_order() -> None:
    state = [np.full(200, 0.5)]
    previous = [np.zeros(200, dtype=bool)]
    previous[0][:100] = True
    # All tied: the previous mask decides completely.
    mask = global_mask(state, previous, 0.5, seed=0, server_round=1)
    assert np.array_equal(mask[0], previous[0])
    # No previous mask: the seeded order decides and depends on the round.
    r1 = global_mask(state, None, 0.5, seed=0, server_round=1)
    r2 = global_mask(state, None, 0.5, seed=0, server_round=2)
    assert not np.array_equal(r1[0], r2[0])


def test_tally_is_exactly_order_independent() -> None:
    """Integer weights are summed exactly, so reply arrival order cannot change a tally."""
    rng = np.random.default_rng(0)
    masks = [[rng.random(1000) < 0.5, rng.random(37) < 0.5] for _ in range(9)]
    weights = [int(w) for w in rng.integers(1, 5000, size=9)]
    forward = tally(masks, weights)
    backward = tally(masks[::-1], weights[::-1])
    for a, b in zip(forward, backward, strict=True):
        assert np.array_equal(a, b)


def test_trimmed_votes_drop_the_masks_farthest_from_the_median() -> None:
    from pemn_fl.methods.frames.voting import outliers

    rng = np.random.default_rng(5)
    consensus = [rng.random(300) < 0.5, rng.random(40) < 0.5]
    honest = []
    for _ in range(8):  # each honest vote: the consensus with 10% of its bits flipped
        honest.append([np.where(rng.random(c.size) < 0.1, ~c, c) for c in consensus])
    attackers = [[~m for m in honest[0]], [~m for m in honest[1]]]
    votes = honest[:3] + [attackers[0]] + honest[3:] + [attackers[1]]
    assert outliers(votes, 0.2) == {3, 9}  # round(0.2 * 10) = 2 dropped: the complements
    assert outliers(votes, 0.0) == set()
    assert len(outliers(votes[:2], 0.49)) == 1  # at least one vote is always kept
    ternary = [[np.array([1, 0, -1, 0])], [np.array([1, 0, -1, 1])], [np.array([-1, 0, 1, 0])]]
    assert outliers(ternary, 0.34) == {2}  # the negated vote is the farthest


# --------------------------------------------------------------------------------------------
# known answers at the edges (each one a mutant the tests above let through)
# --------------------------------------------------------------------------------------------


def test_tally_with_fractional_weights_by_hand() -> None:
    # Weights 0.5 and 1.5 (not integers: the float path): (0.5 * m0 + 1.5 * m1) / 2.
    masks = as_masks([[1, 0, 1]], [[0, 1, 1]])
    np.testing.assert_array_equal(tally(masks, [0.5, 1.5])[0], [0.25, 0.75, 1.0])


def test_tally_of_one_client_and_weights_summing_to_one_or_less() -> None:
    masks = as_masks([[1, 0, 1]])
    np.testing.assert_array_equal(tally(masks)[0], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(tally(masks, [0.25])[0], [1.0, 0.0, 1.0])
    two = as_masks([[1, 0]], [[1, 1]])
    np.testing.assert_array_equal(tally(two, [0.25, 0.75])[0], [1.0, 0.75])


def test_tally_refuses_a_negative_weight_even_when_the_sum_is_positive() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        tally(as_masks([[1, 0]], [[0, 1]]), [3.0, -1.0])


def test_tally_and_update_state_refuse_mismatched_layer_counts() -> None:
    with pytest.raises(ValueError):
        tally([[np.ones(2, bool), np.ones(3, bool)], [np.ones(2, bool)]])
    with pytest.raises(ValueError):
        update_state([np.zeros(2), np.zeros(3)], [np.ones(2)], 0.5)


def test_global_mask_tie_breaks_depend_on_the_run_seed() -> None:
    # Every score tied, no previous mask: the kept half is the seeded order's, so two run
    # seeds keep different edges (and the same seed the same ones).
    state = [np.zeros(64)]
    a = global_mask(state, None, 0.5, seed=0, server_round=1)[0]
    b = global_mask(state, None, 0.5, seed=1, server_round=1)[0]
    assert a.sum() == b.sum() == 32 and not np.array_equal(a, b)
    assert np.array_equal(a, global_mask(state, None, 0.5, seed=0, server_round=1)[0])


def test_outliers_add_up_the_distance_over_every_layer() -> None:
    from pemn_fl.methods.frames.voting import outliers

    # Vote 2 differs from the majority only in layer 0, vote 0 only (and by less) in layer 1:
    # summed over both layers vote 2 is the farthest; layer 1 alone would pick vote 0.
    votes = [[np.array([1, 1, 0, 0]), np.array([0, 0])],
             [np.array([1, 1, 0, 0]), np.array([1, 1])],
             [np.array([0, 0, 1, 1]), np.array([1, 1])],
             [np.array([1, 1, 0, 0]), np.array([1, 1])]]  # fmt: skip
    assert outliers(votes, 0.25) == {2}


def test_outliers_keep_one_vote_even_when_asked_to_trim_them_all() -> None:
    from pemn_fl.methods.frames.voting import outliers

    votes = [[np.array([1, 0])], [np.array([0, 1])], [np.array([1, 1])]]
    assert len(outliers(votes, 1.0)) == 2
