"""Tests for pemn_fl.prototype: reproducibility across processes, sharing rules and spec errors.

The prototype is the part of PEMN-FL that never travels, so every party must rebuild it bit for
bit from the spec. These tests pin the sharing strategies (dense, one-layer, mp, rp) to the
rules written in the module docstring, and check that a prototype does not depend on the global
RNG, the thread count, the process or the order in which layers are listed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pemn_fl.models import apply_prototype, build_model, layer_shapes
from pemn_fl.prototype import (
    INITS,
    STRATEGIES,
    LayerShape,
    PrototypeSpec,
    PrototypeSpecError,
    fingerprint,
    he_std,
    materialize,
    parse_strategy,
    prototype_length,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Distinct fan-ins on purpose, and a unique largest layer ("big": 600 values).
LAYERS = [
    LayerShape("conv", (7, 3, 3, 3)),  # 189 values, fan_in 27
    LayerShape("big", (30, 20)),  # 600 values, fan_in 20
    LayerShape("small", (5, 4)),  # 20 values, fan_in 4
    LayerShape("vec", (9,)),  # 9 values, fan_in 1
]
BIG = LAYERS[1]


def unit(weights: dict[str, torch.Tensor], layer: LayerShape) -> torch.Tensor:
    """A layer's values divided by its own He std: the unit-scale draw it was built from."""
    return weights[layer.name].flatten().double() / he_std(layer)


def tiled(vector: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = vector[i mod len(vector)]`` for ``i < n``."""
    idx = torch.arange(n) % vector.numel()
    return vector[idx]


# --------------------------------------------------------------------------------------------
# Fingerprints: same across processes and thread counts, different for different specs
# --------------------------------------------------------------------------------------------

_CHILD = """
import sys
import torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(int(sys.argv[2]))  # the global RNG must not matter
from pemn_fl.models import apply_prototype, build_model
from pemn_fl.prototype import PrototypeSpec
for spec in (PrototypeSpec(seed=7, strategy="rp:1e-2"),
             PrototypeSpec(seed=7, strategy="dense", init="kaiming-normal")):
    print(apply_prototype(build_model("conv2", (1, 8, 8), 10), spec))
"""


def conv2_fingerprints_in_process() -> list[str]:
    return [
        apply_prototype(build_model("conv2", (1, 8, 8), 10), spec)
        for spec in (
            PrototypeSpec(seed=7, strategy="rp:1e-2"),
            PrototypeSpec(seed=7, strategy="dense", init="kaiming-normal"),
        )
    ]


def test_fingerprint_equal_across_processes_and_thread_counts() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, threads, rng_seed],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for threads, rng_seed in (("1", "1"), ("2", "12345"))
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    one_thread, two_threads = outputs
    assert len(one_thread) == 2 and all(len(fp) == 16 for fp in one_thread)
    assert one_thread == two_threads
    assert one_thread == conv2_fingerprints_in_process()
    assert one_thread[0] != one_thread[1]


def test_materialize_ignores_global_rng_state() -> None:
    spec = PrototypeSpec(seed=3, strategy="rp:0.1", init="kaiming-normal")
    torch.manual_seed(0)
    first = materialize(spec, LAYERS)
    torch.manual_seed(999)
    torch.randn(1000)
    second = materialize(spec, LAYERS)
    for name in first:
        assert torch.equal(first[name], second[name])
    assert fingerprint(spec, first) == fingerprint(spec, second)


@pytest.mark.parametrize("strategy", ["dense", "one-layer", "mp", "rp:0.05"])
@pytest.mark.parametrize("init", INITS)
def test_different_seed_gives_different_prototype(strategy: str, init: str) -> None:
    a = PrototypeSpec(seed=1, strategy=strategy, init=init)
    b = PrototypeSpec(seed=2, strategy=strategy, init=init)
    wa, wb = materialize(a, LAYERS), materialize(b, LAYERS)
    assert not torch.equal(wa["big"], wb["big"])
    assert fingerprint(a, wa) != fingerprint(b, wb)


def test_different_strategy_or_init_gives_different_fingerprint() -> None:
    specs = [
        PrototypeSpec(seed=5, strategy=strategy, init=init)
        for strategy in ("dense", "one-layer", "mp", "rp:0.05", "rp:0.5")
        for init in INITS
    ]
    prints = {fingerprint(spec, materialize(spec, LAYERS)) for spec in specs}
    assert len(prints) == len(specs)
    # rescale is part of the spec too
    spec = PrototypeSpec(seed=5, strategy="mp", rescale=False)
    assert fingerprint(spec, materialize(spec, LAYERS)) not in prints


def test_fingerprint_sees_the_weight_bytes() -> None:
    spec = PrototypeSpec(seed=0)
    weights = materialize(spec, LAYERS)
    before = fingerprint(spec, weights)
    weights["small"] = weights["small"].clone()
    weights["small"][0, 0] = -weights["small"][0, 0]
    assert fingerprint(spec, weights) != before


# --------------------------------------------------------------------------------------------
# rp: random-vector padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "numel_max", "expected"),
    [
        (1e-2, 262144, 2622),  # 2621.44 rounds up
        (0.5, 600, 300),
        (1.0, 600, 600),
        (1e-6, 600, 1),  # never fewer than one value
        (0.25, 7, 2),  # 1.75 rounds up
    ],
)
def test_rp_prototype_length_rule(ratio: float, numel_max: int, expected: int) -> None:
    layers = [LayerShape("a", (numel_max,)), LayerShape("b", (3, 2))]
    spec = PrototypeSpec(strategy=f"rp:{ratio}")
    assert prototype_length(spec, layers) == expected
    assert expected == max(1, math.ceil(ratio * numel_max))


@pytest.mark.parametrize("ratio", [0.05, 0.3, 1.0])
def test_rp_tiles_one_shared_vector_over_every_layer(ratio: float) -> None:
    spec = PrototypeSpec(seed=11, strategy=f"rp:{ratio}", init="kaiming-normal")
    weights = materialize(spec, LAYERS)
    length = prototype_length(spec, LAYERS)
    assert length == max(1, math.ceil(ratio * BIG.numel))

    # The largest layer starts with the shared vector: `length` distinct values, then repeats.
    vector = unit(weights, BIG)[:length]
    assert torch.unique(vector).numel() == length
    for layer in LAYERS:
        w = weights[layer.name]
        assert w.shape == layer.shape and w.dtype == torch.float32
        flat = w.flatten()
        # Exact tiling inside each layer: w[i] == w[i mod length].
        assert torch.equal(flat, tiled(flat[:length], layer.numel))
        # Across layers: unit values (divided by the layer's own He std) are the same vector.
        torch.testing.assert_close(unit(weights, layer), tiled(vector, layer.numel))


def test_rp_signed_constant_tiling_is_exact() -> None:
    spec = PrototypeSpec(seed=4, strategy="rp:0.02", init="signed-constant")
    weights = materialize(spec, LAYERS)
    length = prototype_length(spec, LAYERS)
    signs = torch.sign(weights["big"].flatten())[:length]
    for layer in LAYERS:
        scale = torch.tensor(he_std(layer), dtype=torch.float32)
        expected = tiled(signs, layer.numel) * scale
        assert torch.equal(weights[layer.name].flatten(), expected)


def test_rp_without_rescale_shares_the_largest_layers_scale_exactly() -> None:
    """rescale=False is PEMN's behaviour: every layer copies the largest layer's values."""
    spec = PrototypeSpec(seed=11, strategy="rp:0.1", init="kaiming-normal", rescale=False)
    weights = materialize(spec, LAYERS)
    length = prototype_length(spec, LAYERS)
    big = weights["big"].flatten()
    for layer in LAYERS:
        assert torch.equal(weights[layer.name].flatten(), tiled(big[:length], layer.numel))
    # ... which is a different scale from the rescaled prototype for any layer with another
    # fan-in (here every other layer), and the same for the largest layer itself.
    rescaled = materialize(PrototypeSpec(seed=11, strategy="rp:0.1", init="kaiming-normal"), LAYERS)
    assert torch.equal(rescaled["big"], weights["big"])
    for layer in LAYERS:
        if layer.fan_in != BIG.fan_in:
            ratio = weights[layer.name].abs().sum() / rescaled[layer.name].abs().sum()
            assert ratio.item() == pytest.approx(he_std(BIG) / he_std(layer), rel=1e-5)


# --------------------------------------------------------------------------------------------
# mp, one-layer, dense
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", INITS)
def test_mp_every_layer_is_a_prefix_of_the_largest(init: str) -> None:
    spec = PrototypeSpec(seed=2, strategy="mp", init=init)
    weights = materialize(spec, LAYERS)
    big_unit = unit(weights, BIG)
    for layer in LAYERS:
        torch.testing.assert_close(unit(weights, layer), big_unit[: layer.numel])
        # Signs are exactly a prefix too (no rounding involved).
        assert torch.equal(
            torch.sign(weights[layer.name].flatten()),
            torch.sign(weights["big"].flatten())[: layer.numel],
        )
    assert prototype_length(spec, LAYERS) == BIG.numel


def test_mp_without_rescale_is_an_exact_prefix() -> None:
    spec = PrototypeSpec(seed=2, strategy="mp", init="kaiming-normal", rescale=False)
    weights = materialize(spec, LAYERS)
    big = weights["big"].flatten()
    for layer in LAYERS:
        assert torch.equal(weights[layer.name].flatten(), big[: layer.numel])


def test_one_layer_shares_tensors_between_layers_of_the_same_shape() -> None:
    layers = [
        LayerShape("a", (6, 4)),
        LayerShape("b", (6, 4)),
        LayerShape("c", (4, 6)),  # same numel, other shape
        LayerShape("d", (3, 2, 2, 2)),
        LayerShape("e", (3, 2, 2, 2)),
    ]
    spec = PrototypeSpec(seed=9, strategy="one-layer", init="kaiming-normal")
    w = materialize(spec, layers)
    assert torch.equal(w["a"], w["b"])
    assert torch.equal(w["d"], w["e"])
    assert not torch.allclose(unit(w, layers[0]), unit(w, layers[2]))
    assert not torch.allclose(unit(w, layers[0])[:24], unit(w, layers[3])[:24])
    assert prototype_length(spec, layers) == 24 + 24 + 24


def test_dense_layers_are_all_different() -> None:
    layers = [LayerShape(f"l{i}", (6, 4)) for i in range(4)]
    spec = PrototypeSpec(seed=9, strategy="dense", init="kaiming-normal")
    w = materialize(spec, layers)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(w[f"l{i}"], w[f"l{j}"])
    assert prototype_length(spec, layers) == 4 * 24


@pytest.mark.parametrize(
    "spec",
    [
        PrototypeSpec(seed=3, strategy="dense", init="kaiming-normal"),
        PrototypeSpec(seed=3, strategy="one-layer", init="kaiming-normal"),
        PrototypeSpec(seed=3, strategy="mp", init="kaiming-normal"),
        PrototypeSpec(seed=3, strategy="mp", init="kaiming-normal", rescale=False),
        PrototypeSpec(seed=3, strategy="rp:0.07", init="kaiming-normal"),
        PrototypeSpec(seed=3, strategy="rp:0.07", init="signed-constant", rescale=False),
    ],
    ids=lambda s: f"{s.strategy}-{s.init}-rescale{s.rescale}",
)
def test_layer_order_does_not_matter(spec: PrototypeSpec) -> None:
    forward = materialize(spec, LAYERS)
    backward = materialize(spec, list(reversed(LAYERS)))
    assert forward.keys() == backward.keys()
    for name in forward:
        assert torch.equal(forward[name], backward[name]), name
    assert fingerprint(spec, forward) == fingerprint(spec, backward)


# --------------------------------------------------------------------------------------------
# Inits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["dense", "one-layer", "mp", "rp:0.1"])
def test_signed_constant_values_are_exactly_plus_minus_he_std(strategy: str) -> None:
    spec = PrototypeSpec(seed=1, strategy=strategy, init="signed-constant")
    weights = materialize(spec, LAYERS)
    for layer in LAYERS:
        expected = torch.tensor(math.sqrt(2.0 / layer.fan_in), dtype=torch.float32)
        w = weights[layer.name]
        assert torch.equal(w.abs(), expected.expand_as(w))
    # both signs occur in a layer of 600 values
    assert (weights["big"] > 0).any() and (weights["big"] < 0).any()


def test_kaiming_normal_has_he_std_for_a_big_layer() -> None:
    layer = LayerShape("fc", (512, 256))
    w = materialize(PrototypeSpec(seed=0, strategy="dense", init="kaiming-normal"), [layer])["fc"]
    expected = math.sqrt(2.0 / 256)
    assert w.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(w.mean().item()) < 0.02 * expected
    assert torch.unique(w).numel() > 0.99 * w.numel()  # continuous values, not constants


def test_layer_shape_fan_in() -> None:
    assert LayerShape("c", (8, 3, 5, 5)).fan_in == 75
    assert LayerShape("l", (10, 7)).fan_in == 7
    assert LayerShape("v", (4,)).fan_in == 1
    assert LayerShape("c", (8, 3, 5, 5)).numel == 600


# --------------------------------------------------------------------------------------------
# prototype_length, spec parsing and errors
# --------------------------------------------------------------------------------------------


def test_prototype_length_per_strategy() -> None:
    layers = [
        LayerShape("a", (10, 10)),
        LayerShape("b", (10, 10)),
        LayerShape("c", (20, 10)),
        LayerShape("d", (5,)),
    ]
    assert prototype_length(PrototypeSpec(strategy="dense"), layers) == 100 + 100 + 200 + 5
    assert prototype_length(PrototypeSpec(strategy="one-layer"), layers) == 100 + 200 + 5
    assert prototype_length(PrototypeSpec(strategy="mp"), layers) == 200
    assert prototype_length(PrototypeSpec(strategy="rp:0.03"), layers) == 6
    assert prototype_length(PrototypeSpec(strategy="rp:1e-9"), layers) == 1
    for strategy in ("dense", "one-layer", "mp", "rp:0.5"):
        assert prototype_length(PrototypeSpec(strategy=strategy), []) == 0
        assert materialize(PrototypeSpec(strategy=strategy), []) == {}


def test_prototype_length_counts_what_materialize_really_draws() -> None:
    """For mp/rp the number of distinct unit values equals the reported length."""
    for strategy in ("mp", "rp:0.1", "rp:1.0"):
        spec = PrototypeSpec(seed=8, strategy=strategy, init="kaiming-normal")
        weights = materialize(spec, LAYERS)
        distinct = torch.unique(weights["big"]).numel()
        assert distinct == prototype_length(spec, LAYERS)


def test_parse_strategy_and_spec_properties() -> None:
    assert parse_strategy("rp:1e-3") == ("rp", 0.001)
    assert parse_strategy("mp") == ("mp", None)
    spec = PrototypeSpec(seed=4, strategy="rp:0.25")
    assert (spec.kind, spec.ratio) == ("rp", 0.25)
    assert PrototypeSpec.from_json(spec.to_json()) == spec
    assert set(STRATEGIES) == {"dense", "one-layer", "mp", "rp"}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"strategy": "rp:0"}, r"'rp:0'.*ratio must be in \(0, 1\]"),
        ({"strategy": "rp:abc"}, r"'rp:abc'.*'abc' is not a number"),
        ({"strategy": "rp:1.5"}, r"'rp:1.5'.*ratio must be in \(0, 1\]"),
        ({"strategy": "rp:-1"}, r"'rp:-1'.*ratio must be in \(0, 1\]"),
        ({"strategy": "rp:nan"}, r"ratio must be in \(0, 1\]"),
        ({"strategy": "foo"}, r"unknown prototype 'foo'.*dense, one-layer, mp or rp:RATIO"),
        ({"strategy": 3}, r"must be a string"),
        ({"init": "bad"}, r"unknown init 'bad'.*signed-constant, kaiming-normal"),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
        ({"seed": 1.5}, r"seed must be a non-negative integer"),
        ({"seed": True}, r"seed must be a non-negative integer"),
    ],
)
def test_bad_specs_raise_with_a_useful_message(kwargs: dict, pattern: str) -> None:
    with pytest.raises(PrototypeSpecError, match=pattern):
        PrototypeSpec(**kwargs)


def test_spec_error_is_a_value_error_and_bad_json_is_reported() -> None:
    assert issubclass(PrototypeSpecError, ValueError)
    with pytest.raises(PrototypeSpecError, match="not a prototype spec"):
        PrototypeSpec.from_json("{not json")
    with pytest.raises(PrototypeSpecError, match="not a prototype spec"):
        PrototypeSpec.from_json('{"colour": "red"}')


def test_duplicate_layer_names_are_rejected() -> None:
    with pytest.raises(PrototypeSpecError, match="unique"):
        materialize(PrototypeSpec(), [LayerShape("a", (2, 2)), LayerShape("a", (3, 3))])


def test_conv2_rp_prototype_is_tiny_compared_to_the_network() -> None:
    shapes = layer_shapes(build_model("conv2", (1, 8, 8), 10))
    numel_max = max(layer.numel for layer in shapes)
    assert numel_max == 64 * 4 * 4 * 256  # the first fully connected layer
    spec = PrototypeSpec(seed=7, strategy="rp:1e-2")
    assert prototype_length(spec, shapes) == 2622
    assert prototype_length(PrototypeSpec(strategy="dense"), shapes) == sum(s.numel for s in shapes)
