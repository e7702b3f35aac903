"""Tests for pemn_fl.masked: top-k masks, the straight-through estimator and layer plumbing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pemn_fl.masked import (
    GetSubnet,
    MaskedConv2d,
    MaskedLinear,
    get_masks,
    masked_layers,
    num_kept,
    topk_mask,
)

# --------------------------------------------------------------------------------------------
# num_kept / topk_mask
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numel", "keep", "expected"),
    [
        (10, 0.5, 5),
        (10, 1.0, 10),
        (100, 0.01, 1),
        (1000, 0.001, 1),
        (1000, 0.0001, 1),  # never fewer than one edge
        (1, 0.01, 1),
        (7, 0.3, 2),  # 2.1 rounds to 2
        (7, 0.4, 3),  # 2.8 rounds to 3
        (0, 0.5, 0),
    ],
)
def test_num_kept_by_hand(numel: int, keep: float, expected: int) -> None:
    assert num_kept(numel, keep) == expected


@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (10,), (6, 5), (4, 3, 3, 3), (1001,)])
@pytest.mark.parametrize("keep", [0.01, 0.1, 0.3, 0.5, 0.99, 1.0])
def test_topk_mask_keeps_exactly_num_kept_largest(shape: tuple[int, ...], keep: float) -> None:
    gen = torch.Generator().manual_seed(hash((shape, keep)) % 2**31)
    scores = torch.randn(shape, generator=gen)
    mask = topk_mask(scores, keep)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    k = num_kept(scores.numel(), keep)
    assert int(mask.sum()) == k
    if k < scores.numel():
        assert scores[mask].min() > scores[~mask].max()


def test_topk_mask_all_equal_scores_keeps_lowest_indices() -> None:
    scores = torch.full((10,), 0.25)
    mask = topk_mask(scores, 0.3)
    assert mask.tolist() == [True] * 3 + [False] * 7
    # Deterministic: same answer every time, also for 2-D (flat index order).
    scores2d = torch.zeros(4, 5)
    mask2d = topk_mask(scores2d, 0.4)
    assert torch.equal(mask2d, topk_mask(scores2d, 0.4))
    assert mask2d.flatten().tolist() == [True] * 8 + [False] * 12


def test_topk_mask_partial_ties_lowest_index_wins() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 2.0, 2.0, 0.5])
    # k = 3: the 3.0 plus the two lowest-indexed 2.0s.
    assert topk_mask(scores, 0.5).tolist() == [False, True, True, True, False, False]
    # k = 2
    assert topk_mask(scores, 2 / 6).tolist() == [False, True, True, False, False, False]


def test_topk_mask_does_not_track_gradients() -> None:
    scores = torch.randn(8, requires_grad=True)
    assert not topk_mask(scores, 0.5).requires_grad


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def make_linear(seed: int = 0, keep: float = 0.5) -> MaskedLinear:
    torch.manual_seed(seed)
    layer = MaskedLinear(4, 3, keep=keep)
    gen = torch.Generator().manual_seed(seed + 1)
    layer.set_weight(torch.randn(3, 4, generator=gen))
    layer.set_scores(torch.randn(3, 4, generator=gen))  # mixed signs on purpose
    return layer


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 1.0])
def test_mask_equals_subnet_and_uses_absolute_scores(keep: float) -> None:
    for layer in (make_linear(keep=keep), MaskedConv2d(3, 4, 3, keep=keep)):
        gen = torch.Generator().manual_seed(5)
        layer.set_scores(torch.randn(layer.scores.shape, generator=gen))
        mask = layer.mask()
        assert mask.dtype == torch.bool and mask.shape == layer.weight.shape
        assert torch.equal(mask, layer.subnet() > 0)
        assert torch.equal(mask, topk_mask(layer.scores.detach().abs(), keep))
        assert int(mask.sum()) == num_kept(layer.weight.numel(), keep)


def test_large_negative_scores_are_kept() -> None:
    layer = MaskedLinear(2, 2, keep=0.5)
    layer.set_scores(torch.tensor([[-5.0, 0.1], [0.2, 4.0]]))
    assert layer.mask().tolist() == [[True, False], [False, True]]


def test_linear_forward_uses_masked_weight() -> None:
    layer = make_linear()
    x = torch.randn(5, 4)
    expected = x @ (layer.weight * layer.mask()).T
    torch.testing.assert_close(layer(x), expected)


def test_conv_forward_uses_masked_weight() -> None:
    torch.manual_seed(0)
    layer = MaskedConv2d(2, 3, 3, stride=2, padding=1, keep=0.3)
    x = torch.randn(2, 2, 7, 7)
    expected = F.conv2d(x, layer.weight * layer.mask(), stride=2, padding=1)
    out = layer(x)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out, expected)


def test_weight_is_a_frozen_buffer_and_scores_the_only_parameter() -> None:
    for layer in (MaskedLinear(4, 3), MaskedConv2d(2, 3, 3)):
        params = dict(layer.named_parameters())
        assert list(params) == ["scores"]
        assert "weight" in dict(layer.named_buffers())
        assert not layer.weight.requires_grad
        assert layer.bias is None
        assert layer.scores.shape == layer.weight.shape
        assert "weight" in layer.state_dict() and "scores" in layer.state_dict()


def test_gradients_reach_scores_through_straight_through_estimator() -> None:
    layer = make_linear(keep=0.5)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    loss = layer(x).pow(2).sum()
    loss.backward()
    assert layer.scores.grad is not None
    assert layer.weight.grad is None
    # Straight-through: dropped edges get a gradient too (that is how they can come back).
    dropped = ~layer.mask()
    assert (layer.scores.grad[dropped] != 0).all()
    assert (layer.scores.grad[~dropped] != 0).all()


def test_score_gradient_by_hand_accounts_for_abs() -> None:
    """grad_scores = sign(scores) * dL/dW_eff * weight, with W_eff = weight * mask."""
    layer = make_linear(seed=3, keep=0.5)
    scores = layer.scores.detach().clone()
    assert (scores < 0).any() and (scores > 0).any()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 4, generator=gen)
    c = torch.randn(5, 3, generator=gen)
    loss = (layer(x) * c).sum()
    loss.backward()

    # out = x @ W_eff.T  =>  dL/dW_eff = c.T @ x
    grad_w_eff = c.T @ x
    expected = torch.sign(scores) * grad_w_eff * layer.weight
    torch.testing.assert_close(layer.scores.grad, expected)
    # A negative score gets the negated straight-through gradient of the masked weight.
    neg = scores < 0
    torch.testing.assert_close(layer.scores.grad[neg], -(grad_w_eff * layer.weight)[neg])


def test_get_subnet_backward_is_identity() -> None:
    scores = torch.tensor([0.3, 2.0, 1.0, 0.1], requires_grad=True)
    out = GetSubnet.apply(scores, 0.5)
    assert out.tolist() == [0.0, 1.0, 1.0, 0.0]
    grad = torch.tensor([1.0, -2.0, 3.0, -4.0])
    out.backward(grad)
    assert torch.equal(scores.grad, grad)


def test_a_gradient_step_can_flip_the_mask() -> None:
    layer = MaskedLinear(1, 2, keep=0.5)
    layer.set_weight(torch.tensor([[1.0], [1.0]]))
    layer.set_scores(torch.tensor([[1.0], [0.9]]))
    assert layer.mask().flatten().tolist() == [True, False]
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    # Loss rewards output 2 being large: only the second edge matters.
    for _ in range(3):
        opt.zero_grad()
        out = layer(torch.ones(1, 1))
        (out[0, 0] - out[0, 1]).backward()
        opt.step()
    assert layer.mask().flatten().tolist() == [False, True]
    assert torch.equal(layer.weight, torch.tensor([[1.0], [1.0]]))  # never trained


def test_set_scores_and_set_weight_shape_errors() -> None:
    layer = MaskedLinear(4, 3)
    with pytest.raises(ValueError, match=r"scores shape \(4, 3\) != \(3, 4\)"):
        layer.set_scores(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"weight shape \(12,\) != \(3, 4\)"):
        layer.set_weight(torch.zeros(12))
    conv = MaskedConv2d(2, 3, 3)
    with pytest.raises(ValueError, match="scores shape"):
        conv.set_scores(torch.zeros(3, 2, 3, 2))


def test_set_scores_and_set_weight_copy_values() -> None:
    layer = MaskedLinear(2, 2, keep=0.25)
    new = torch.tensor([[0.0, 0.0], [0.0, 9.0]])
    layer.set_scores(new)
    new[1, 1] = 0.0  # the layer holds a copy
    assert layer.mask().tolist() == [[False, False], [False, True]]
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    layer.set_weight(weight)
    assert torch.equal(layer.weight, weight) and layer.weight.data_ptr() != weight.data_ptr()
    assert isinstance(layer.scores, nn.Parameter)


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01, 2.0])
def test_keep_out_of_range_raises(keep: float) -> None:
    with pytest.raises(ValueError, match=r"keep ratio must be in \(0, 1\]"):
        MaskedLinear(3, 3, keep=keep)
    with pytest.raises(ValueError, match=r"keep ratio must be in \(0, 1\]"):
        MaskedConv2d(3, 3, 3, keep=keep)


def test_keep_one_keeps_everything() -> None:
    layer = make_linear(keep=1.0)
    assert layer.mask().all()
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), x @ layer.weight.T)


def test_masked_layers_and_get_masks_follow_definition_order() -> None:
    model = nn.Sequential(
        MaskedConv2d(1, 2, 3, keep=0.5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2, 2),  # not masked: ignored
        MaskedLinear(8, 4, keep=0.25),
    )
    layers = masked_layers(model)
    assert [name for name, _ in layers] == ["0", "4"]
    masks = get_masks(model)
    assert [m.shape for m in masks] == [(2, 1, 3, 3), (4, 8)]
    assert [int(m.sum()) for m in masks] == [9, 8]
