"""Tests for pemn_fl.models: every architecture in masked and dense form, prototypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pemn_fl.data import load_dataset
from pemn_fl.masked import MaskedConv2d, MaskedLinear, get_masks, masked_layers, num_kept
from pemn_fl.models import (
    MODELS,
    ModelError,
    apply_prototype,
    build_model,
    count_params,
    layer_shapes,
    seed_scores,
)
from pemn_fl.prototype import PrototypeSpec, fingerprint, materialize
from pemn_fl.task import TrainConfig, evaluate, train

INPUT = (1, 8, 8)
WIDTH = 0.25


def dense_weight_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_runs_masked_and_dense(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, *INPUT)
    masked = build_model(name, INPUT, 10, masked=True, width=WIDTH, keep=0.5)
    apply_prototype(masked, PrototypeSpec(seed=0))
    dense = build_model(name, INPUT, 10, masked=False, width=WIDTH)
    for model in (masked, dense):
        for mode in (model.train, model.eval):
            mode()
            out = model(x)
            assert out.shape == (4, 10)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_masked_model_parameters_are_only_scores(name: str) -> None:
    model = build_model(name, INPUT, 10, masked=True, width=WIDTH)
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.endswith(".scores") for n in names), names
    layers = masked_layers(model)
    assert len(names) == len(layers)
    assert count_params(model) == sum(layer.weight.numel() for _, layer in layers)
    # Non-affine, stat-free BN holds nothing at all.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            assert not module.affine and module.running_mean is None
    # Everything that is a conv/linear is masked.
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            assert isinstance(module, MaskedConv2d | MaskedLinear)


@pytest.mark.parametrize("name", MODELS)
def test_dense_model_has_the_same_layer_shapes(name: str) -> None:
    masked = build_model(name, INPUT, 10, masked=True, width=WIDTH)
    dense = build_model(name, INPUT, 10, masked=False, width=WIDTH)
    shapes = [layer.shape for layer in layer_shapes(masked)]
    assert shapes == dense_weight_shapes(dense)
    assert masked_layers(dense) == []
    # The dense model trains exactly those weights (no bias, no BN affine).
    assert count_params(dense) == sum(int(np.prod(s)) for s in shapes)


def test_layer_shapes_by_hand_for_conv2() -> None:
    model = build_model("conv2", (3, 8, 8), 10, width=1.0)
    assert [(s.name, s.shape) for s in layer_shapes(model)] == [
        ("features.0", (64, 3, 3, 3)),
        ("features.3", (64, 64, 3, 3)),
        ("classifier.1", (256, 64 * 4 * 4)),
        ("classifier.4", (256, 256)),
        ("classifier.7", (10, 256)),
    ]


def test_width_scales_channels() -> None:
    shapes = [s.shape for s in layer_shapes(build_model("mlp", INPUT, 10, width=0.25))]
    assert shapes == [(64, 64), (64, 64), (10, 64)]
    resnet = layer_shapes(build_model("resnet20", INPUT, 10, width=0.25))
    assert resnet[0].shape == (4, 1, 3, 3)
    assert resnet[-1].shape == (10, 16)
    assert len(resnet) == 1 + 3 * 3 * 2 + 1  # stem + 9 blocks of 2 convs + fc


def test_affine_bn_adds_bn_parameters() -> None:
    model = build_model("mlp", INPUT, 10, width=0.25, affine_bn=True)
    names = [n for n, _ in model.named_parameters()]
    assert any(n.endswith(".bias") for n in names)
    assert sum(n.endswith(".scores") for n in names) == 3


@pytest.mark.parametrize(
    ("name", "shape", "pattern"),
    [
        ("conv4", (1, 2, 2), r"conv4 pools 2 times and needs inputs of at least 4x4; got 2x2"),
        ("conv6", (1, 4, 4), r"conv6 .* at least 8x8; got 4x4.*smaller model"),
        ("conv2", (3, 1, 5), r"conv2 .* at least 2x2; got 1x5"),
    ],
)
def test_too_small_input_raises_helpful_model_error(
    name: str, shape: tuple[int, int, int], pattern: str
) -> None:
    for masked in (True, False):
        with pytest.raises(ModelError, match=pattern):
            build_model(name, shape, 10, masked=masked)


def test_unknown_model_and_bad_width_raise_model_error() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'vgg16'.*mlp, conv2, conv4, conv6"):
        build_model("vgg16", INPUT, 10)
    with pytest.raises(ModelError, match="width must be a finite number > 0"):
        build_model("mlp", INPUT, 10, width=0)
    assert issubclass(ModelError, ValueError)


@pytest.mark.parametrize("name", ["conv2", "resnet20"])
def test_apply_prototype_installs_materialized_weights(name: str) -> None:
    model = build_model(name, INPUT, 10, width=WIDTH)
    spec = PrototypeSpec(seed=3, strategy="rp:0.1", init="kaiming-normal")
    fp = apply_prototype(model, spec)
    expected = materialize(spec, layer_shapes(model))
    for layer_name, layer in masked_layers(model):
        assert torch.equal(layer.weight, expected[layer_name])
    assert fp == fingerprint(spec, expected)
    # The same model rebuilt elsewhere gets the same fingerprint; another seed does not.
    other = build_model(name, INPUT, 10, width=WIDTH)
    assert apply_prototype(other, spec) == fp
    other_spec = PrototypeSpec(seed=4, strategy="rp:0.1", init="kaiming-normal")
    assert apply_prototype(other, other_spec) != fp


def test_apply_prototype_does_not_touch_scores() -> None:
    model = build_model("mlp", INPUT, 10, width=WIDTH)
    seed_scores(model, 1)
    before = [layer.scores.detach().clone() for _, layer in masked_layers(model)]
    apply_prototype(model, PrototypeSpec(seed=9))
    after = [layer.scores.detach() for _, layer in masked_layers(model)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_seed_scores_is_reproducible_and_independent_of_global_rng() -> None:
    a = build_model("conv2", INPUT, 10, width=WIDTH)
    b = build_model("conv2", INPUT, 10, width=WIDTH)
    torch.manual_seed(1)
    seed_scores(a, 5)
    torch.manual_seed(2)
    seed_scores(b, 5)
    for (_, la), (_, lb) in zip(masked_layers(a), masked_layers(b), strict=True):
        assert torch.equal(la.scores, lb.scores)
    seed_scores(b, 6)
    assert not torch.equal(masked_layers(a)[0][1].scores, masked_layers(b)[0][1].scores)


def test_masked_mlp_learns_synthetic_data() -> None:
    """Only the mask is trained, yet the network clearly beats chance (10 classes)."""
    data = load_dataset("synthetic")
    assert data.num_classes == 10 and data.input_shape == INPUT
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, width=WIDTH, keep=0.5)
    spec = PrototypeSpec(seed=0)
    apply_prototype(model, spec)
    seed_scores(model, 0)
    weights_before = materialize(spec, layer_shapes(model))
    masks_before = get_masks(model)
    _, acc_before = evaluate(model, data.x_test, data.y_test)

    loss = train(
        model, data.x_train, data.y_train, TrainConfig(epochs=2, lr=0.1, batch_size=32), seed=0
    )
    test_loss, acc = evaluate(model, data.x_test, data.y_test)

    assert np.isfinite(loss) and np.isfinite(test_loss)
    assert acc > 0.5, f"accuracy {acc:.3f} (before training {acc_before:.3f})"
    assert acc > acc_before + 0.2
    # The frozen weights did not move; the masks did, and kept their sizes.
    for name, layer in masked_layers(model):
        assert torch.equal(layer.weight, weights_before[name])
    masks_after = get_masks(model)
    assert any(not torch.equal(a, b) for a, b in zip(masks_before, masks_after, strict=True))
    for mask in masks_after:
        assert int(mask.sum()) == num_kept(mask.numel(), 0.5)
