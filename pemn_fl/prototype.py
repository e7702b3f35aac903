"""Prototypes: the frozen random weights of a masked network, regenerated from a tiny spec.

PEMN (Bai et al., NeurIPS 2022) shows that a network whose weights are a few random numbers,
repeated, still represents a task well once a binary mask picks the right edges. In
federated learning that means *no weight ever travels*: every party rebuilds the same
prototype from ``PrototypeSpec`` and only masks cross the network.

Why this module exists next to PEMN's released code: theirs draws weights with the global,
unseeded RNG, so its prototype cannot be rebuilt on another machine. Here every random
tensor comes from an explicit CPU ``torch.Generator`` whose seed is derived from
``(spec.seed, tag)``, where the tag names *what* is drawn (a layer name, a weight shape, or
the shared vector). The result therefore does not depend on thread count, device, or the
order in which layers happen to be constructed.

Strategies (PEMN section 3):

* ``dense``: every masked layer has its own random tensor (the usual supermask setting).
* ``one-layer``: layers with the same weight shape share one tensor.
* ``mp`` (max-layer padding): the largest layer's tensor is the prototype; layer ``l`` takes
  its first ``d_l`` values.
* ``rp:RATIO`` (random-vector padding): one vector of ``max(1, ceil(RATIO * numel_max))``
  values tiled over every layer: ``w_l.flatten()[i] = v[i mod len(v)]``.

Scaling: values are drawn at unit scale and each layer is multiplied by its *own* He std
``sqrt(2 / fan_in)``. PEMN instead copies the largest layer's values verbatim, so layers with
a smaller fan-in run at the wrong scale; ``rescale=False`` reproduces that exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

STRATEGIES = ("dense", "one-layer", "mp", "rp")
INITS = ("signed-constant", "kaiming-normal")


class PrototypeSpecError(ValueError):
    """A prototype spec that cannot be built; the message says which part and what is valid."""


@dataclass(frozen=True)
class LayerShape:
    """What the prototype needs to know about one masked layer (never its values)."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fan_in(self) -> int:
        # Linear: (out, in); Conv2d: (out, in, kh, kw). fan_in = everything but dim 0.
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1


@dataclass(frozen=True)
class PrototypeSpec:
    """Everything needed to regenerate the frozen weights, bit for bit.

    ``strategy`` is ``dense``, ``one-layer``, ``mp`` or ``rp:RATIO`` (0 < RATIO <= 1).
    """

    seed: int = 0
    strategy: str = "dense"
    init: str = "signed-constant"
    rescale: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise PrototypeSpecError(
                f"prototype seed must be a non-negative integer, got {self.seed!r}"
            )
        if self.init not in INITS:
            raise PrototypeSpecError(
                f"unknown init {self.init!r}: use one of {', '.join(INITS)}"
            )
        parse_strategy(self.strategy)  # validates

    @property
    def kind(self) -> str:
        return parse_strategy(self.strategy)[0]

    @property
    def ratio(self) -> float | None:
        return parse_strategy(self.strategy)[1]

    def to_json(self) -> str:
        """Canonical text form: what a party would actually have to store or send."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PrototypeSpec:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise PrototypeSpecError(f"not a prototype spec: {text[:80]!r} ({exc})") from exc


def parse_strategy(strategy: str) -> tuple[str, float | None]:
    """Split ``rp:1e-3`` into ``("rp", 0.001)``; reject anything else with a clear message."""
    if not isinstance(strategy, str):
        raise PrototypeSpecError(f"prototype strategy must be a string, got {strategy!r}")
    valid = "dense, one-layer, mp or rp:RATIO with 0 < RATIO <= 1 (e.g. rp:1e-3)"
    if strategy in ("dense", "one-layer", "mp"):
        return strategy, None
    if strategy.startswith("rp:"):
        text = strategy[3:]
        try:
            ratio = float(text)
        except ValueError:
            raise PrototypeSpecError(
                f"bad prototype {strategy!r}: ratio {text!r} is not a number; use {valid}"
            ) from None
        if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
            raise PrototypeSpecError(
                f"bad prototype {strategy!r}: ratio must be in (0, 1]; use {valid}"
            )
        return "rp", ratio
    raise PrototypeSpecError(f"unknown prototype {strategy!r}: use {valid}")


def derived_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for one named draw: independent streams without ordering effects."""
    digest = hashlib.sha256(f"pemn-fl/{seed}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _unit_draw(n: int, init: str, seed: int, tag: str) -> torch.Tensor:
    """``n`` unit-scale values: N(0, 1) for kaiming-normal, +-1 for signed-constant."""
    gen = torch.Generator(device="cpu").manual_seed(derived_seed(seed, tag))
    values = torch.randn(n, generator=gen, dtype=torch.float32)
    if init == "signed-constant":
        values = torch.where(values >= 0, 1.0, -1.0)
    return values


def he_std(layer: LayerShape) -> float:
    """He/Kaiming std for ReLU nets, fan-in mode: the scale both inits use."""
    return math.sqrt(2.0 / layer.fan_in)


def prototype_length(spec: PrototypeSpec, layers: Sequence[LayerShape]) -> int:
    """How many random numbers the prototype really holds (the paper's storage count)."""
    if not layers:
        return 0
    numel_max = max(layer.numel for layer in layers)
    kind, ratio = parse_strategy(spec.strategy)
    if kind == "dense":
        return sum(layer.numel for layer in layers)
    if kind == "one-layer":
        return sum({layer.shape: layer.numel for layer in layers}.values())
    if kind == "mp":
        return numel_max
    assert ratio is not None
    return max(1, math.ceil(ratio * numel_max))


def _largest(layers: Sequence[LayerShape]) -> LayerShape:
    """First layer of maximal size, in the model's canonical order (PEMN's choice)."""
    numel_max = max(layer.numel for layer in layers)
    return next(layer for layer in layers if layer.numel == numel_max)


def materialize(spec: PrototypeSpec, layers: Sequence[LayerShape]) -> dict[str, torch.Tensor]:
    """Build every masked layer's frozen weight tensor from the spec.

    Returns ``{layer name: float32 tensor of the layer's shape}``. Deterministic: the same
    spec and layer shapes give bit-identical tensors in any process.
    """
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise PrototypeSpecError("masked layer names must be unique")
    if not layers:
        return {}
    kind, ratio = parse_strategy(spec.strategy)
    largest = _largest(layers)
    out: dict[str, torch.Tensor] = {}

    if kind == "dense":
        for layer in layers:
            unit = _unit_draw(layer.numel, spec.init, spec.seed, f"layer:{layer.name}")
            out[layer.name] = (unit * he_std(layer)).reshape(layer.shape)
        return out

    if kind == "one-layer":
        shared: dict[tuple[int, ...], torch.Tensor] = {}
        for layer in layers:
            if layer.shape not in shared:
                tag = "shape:" + "x".join(map(str, layer.shape))
                shared[layer.shape] = _unit_draw(layer.numel, spec.init, spec.seed, tag)
            # Same shape means same fan-in, so rescaling is a no-op here.
            out[layer.name] = (shared[layer.shape] * he_std(layer)).reshape(layer.shape)
        return out

    if kind == "mp":
        vector = _unit_draw(largest.numel, spec.init, spec.seed, "mp")
    else:
        assert ratio is not None
        length = max(1, math.ceil(ratio * largest.numel))
        vector = _unit_draw(length, spec.init, spec.seed, "rp")

    for layer in layers:
        reps = math.ceil(layer.numel / vector.numel())
        values = vector.repeat(reps)[: layer.numel] if reps > 1 else vector[: layer.numel]
        scale = he_std(layer) if spec.rescale else he_std(largest)
        out[layer.name] = (values * scale).reshape(layer.shape).contiguous()
    return out


def fingerprint(spec: PrototypeSpec, weights: dict[str, torch.Tensor]) -> str:
    """16 hex chars identifying a materialised prototype (spec + shapes + weight bytes).

    Two parties compare fingerprints instead of weights: equal fingerprints mean their masks
    select edges of the same network. Hashing the materialised values (not only the spec)
    also catches a platform whose RNG would drift.
    """
    h = hashlib.sha256(spec.to_json().encode())
    for name in sorted(weights):
        tensor = weights[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(repr(tuple(tensor.shape)).encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()[:16]
