"""Tests for pemn_fl.scores: client scores whose top-k is exactly the global mask."""

from __future__ import annotations

import pytest
import torch

from pemn_fl.masked import num_kept, topk_mask
from pemn_fl.scores import realign, score_scale, scores_from_mask

SHAPES = [(1,), (10,), (7, 5), (8, 3, 3, 3), (64, 64)]
KEEPS = [0.05, 0.3, 0.5, 0.9]


def random_mask(shape: tuple[int, ...], keep: float, seed: int) -> torch.Tensor:
    """A random bool mask of the layer's size with exactly num_kept(numel, keep) entries."""
    gen = torch.Generator().manual_seed(seed)
    numel = int(torch.Size(shape).numel())
    k = num_kept(numel, keep)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel, generator=gen)[:k]] = True
    return mask.view(shape)


def random_scores(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen)


def own_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    a = scores.abs().flatten()
    own = torch.zeros(a.numel(), dtype=torch.bool)
    own[torch.topk(a, k).indices] = True
    return own.view_as(scores)


# --------------------------------------------------------------------------------------------
# scores_from_mask (stateless)
# --------------------------------------------------------------------------------------------


def test_score_scale_is_kaiming_uniform_bound() -> None:
    assert score_scale((10, 25)) == pytest.approx(0.2)
    assert score_scale((4, 1, 3, 3)) == pytest.approx(1 / 3)
    assert score_scale((7,)) == 1.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_scores_from_mask_topk_is_the_mask(
    shape: tuple[int, ...], keep: float, margin: float
) -> None:
    mask = random_mask(shape, keep, seed=len(shape) * 100 + int(keep * 100))
    gen = torch.Generator().manual_seed(0)
    scores = scores_from_mask(mask, margin, gen)
    assert scores.shape == mask.shape and scores.dtype == torch.float32
    assert torch.equal(topk_mask(scores.abs(), keep), mask)
    b = score_scale(shape)
    assert (scores >= 0).all()
    assert (scores[~mask] < b).all()
    assert (scores[mask] >= b * (1.0 + margin) * (1 - 1e-6)).all()
    assert (scores[mask] < b * (2.0 + margin) * (1 + 1e-6)).all()


def test_scores_from_mask_is_seeded() -> None:
    mask = random_mask((20, 5), 0.5, seed=1)
    a = scores_from_mask(mask, 0.5, torch.Generator().manual_seed(3))
    b = scores_from_mask(mask, 0.5, torch.Generator().manual_seed(3))
    c = scores_from_mask(mask, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_larger_margin_widens_the_gap() -> None:
    mask = random_mask((50, 4), 0.5, seed=2)
    gaps = []
    for margin in (0.0, 1.0, 3.0):
        s = scores_from_mask(mask, margin, torch.Generator().manual_seed(0))
        gaps.append(float(s[mask].min() - s[~mask].max()))
    assert gaps[0] < gaps[1] < gaps[2]


# --------------------------------------------------------------------------------------------
# realign (stateful)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realign_topk_is_the_global_mask(shape: tuple[int, ...], keep: float, seed: int) -> None:
    scores = random_scores(shape, seed)
    g = random_mask(shape, keep, seed + 17)
    new = realign(scores, g)
    assert new.shape == scores.shape
    assert torch.equal(topk_mask(new.abs(), keep), g)
    # Signs are preserved (randn never gives exactly zero).
    assert torch.equal(torch.sign(new), torch.sign(scores))


def test_realign_moves_disagreeing_edges_just_across_the_threshold() -> None:
    eps = 1e-3
    scores = random_scores((40, 10), 5)
    g = random_mask((40, 10), 0.3, 6)
    k = int(g.sum())
    a = scores.abs()
    tau = torch.topk(a.flatten(), k).values[-1]
    own = own_topk(scores, k)
    new = realign(scores, g, eps=eps)
    lifted, lowered = g & ~own, ~g & own
    assert lifted.any() and lowered.any()
    torch.testing.assert_close(new.abs()[lifted], (tau * (1 + eps)).expand(int(lifted.sum())))
    torch.testing.assert_close(new.abs()[lowered], (tau * (1 - eps)).expand(int(lowered.sum())))


def test_realign_keeps_agreeing_edges_away_from_the_threshold() -> None:
    eps = 1e-3
    scores = random_scores((40, 10), 7)
    g = random_mask((40, 10), 0.5, 8)
    k = int(g.sum())
    a = scores.abs()
    tau = torch.topk(a.flatten(), k).values[-1]
    own = own_topk(scores, k)
    far = (a > tau * (1 + eps)) | (a < tau * (1 - eps))
    agree = (g == own) & far
    assert int(agree.sum()) > 100
    new = realign(scores, g, eps=eps)
    assert torch.equal(new[agree], scores[agree])


@pytest.mark.parametrize("seed", [0, 1])
def test_realign_leaves_all_agreeing_edges_unchanged(seed: int) -> None:
    """Documented: 'edges where its own top-k agrees with g keep their magnitude'."""
    scores = random_scores((40, 10), seed)
    g = random_mask((40, 10), 0.5, seed + 50)
    own = own_topk(scores, int(g.sum()))
    agree = g == own
    new = realign(scores, g)
    assert torch.equal(new[agree], scores[agree])



@pytest.mark.parametrize("keep", [0.1, 0.5])
def test_realign_to_own_topk_returns_the_same_scores(keep: float) -> None:
    scores = random_scores((50,), 3)
    g = topk_mask(scores.abs(), keep)
    assert torch.equal(realign(scores, g), scores)


def test_realign_to_own_topk_keeps_mask_and_changes_little() -> None:
    """What does hold today: the mask is unchanged and magnitudes move by at most eps."""
    scores = random_scores((50,), 3)
    g = topk_mask(scores.abs(), 0.5)
    new = realign(scores, g)
    assert torch.equal(topk_mask(new.abs(), 0.5), g)
    torch.testing.assert_close(new, scores, rtol=1.01e-3, atol=0.0)


def test_realign_trivial_masks_and_input_untouched() -> None:
    scores = random_scores((6, 4), 9)
    original = scores.clone()
    for g in (torch.ones(6, 4, dtype=torch.bool), torch.zeros(6, 4, dtype=torch.bool)):
        out = realign(scores, g)
        assert torch.equal(out, scores) and out.data_ptr() != scores.data_ptr()
    realign(scores, random_mask((6, 4), 0.5, 1))
    assert torch.equal(scores, original)


def test_realign_zero_scores_still_give_the_mask() -> None:
    scores = torch.zeros(10)
    g = random_mask((10,), 0.3, 4)
    new = realign(scores, g)
    assert torch.equal(topk_mask(new.abs(), 0.3), g)


def test_realign_works_on_parameters_with_grad() -> None:
    scores = torch.nn.Parameter(random_scores((8, 8), 2))
    g = random_mask((8, 8), 0.25, 3)
    new = realign(scores, g)
    assert not new.requires_grad
    assert torch.equal(topk_mask(new.abs(), 0.25), g)
