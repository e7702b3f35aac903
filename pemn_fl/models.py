"""Architectures, each in a masked form (over a prototype) and a dense-trainable form.

One builder per architecture takes a ``LayerKit``: the masked kit makes ``MaskedConv2d`` /
``MaskedLinear``, the dense kit makes plain ``nn.Conv2d`` / ``nn.Linear`` with PyTorch's
standard init. So PEMN-FL and the dense FedAvg baseline run *the same* architecture.

BatchNorm: non-affine and without running statistics by default, so a masked model is
exactly prototype + masks and nothing else is learned or has to travel (evaluation then
normalises with the statistics of the evaluated batch; evaluate in batches of hundreds).
``affine_bn=True`` adds learnable BN scale/shift (floats that would have to be counted).

Models: ``mlp``; ``conv2``/``conv4``/``conv6`` (the VGG-like CNNs of the supermask and FedPM
papers: 64-64-pool[-128-128-pool[-256-256-pool]] then fc 256-256-classes); ``resnet20``
(CIFAR-style, 3 stages of 3 basic blocks, parameter-free shortcuts).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pemn_fl.masked import MaskedConv2d, MaskedLinear, masked_layers
from pemn_fl.prototype import LayerShape, PrototypeSpec, fingerprint, materialize
from pemn_fl.scores import score_scale

MODELS = ("mlp", "conv2", "conv4", "conv6", "resnet20")


class ModelError(ValueError):
    """Unknown model or a model that cannot fit the dataset's input."""


@dataclass(frozen=True)
class LayerKit:
    """Factories for the layers that differ between the masked and dense forms."""

    conv: Callable[[int, int, int, int, int], nn.Module]  # in, out, kernel, stride, padding
    linear: Callable[[int, int], nn.Module]
    bn2d: Callable[[int], nn.Module]
    bn1d: Callable[[int], nn.Module]


def make_kit(masked: bool, keep: float = 0.5, affine_bn: bool = False) -> LayerKit:
    def bn2d(c: int) -> nn.Module:
        return nn.BatchNorm2d(c, affine=affine_bn, track_running_stats=False)

    def bn1d(c: int) -> nn.Module:
        return nn.BatchNorm1d(c, affine=affine_bn, track_running_stats=False)

    if masked:
        return LayerKit(
            conv=lambda i, o, k, s, p: MaskedConv2d(i, o, k, s, p, keep=keep),
            linear=lambda i, o: MaskedLinear(i, o, keep=keep),
            bn2d=bn2d,
            bn1d=bn1d,
        )
    return LayerKit(
        conv=lambda i, o, k, s, p: nn.Conv2d(i, o, k, s, p, bias=False),
        linear=lambda i, o: nn.Linear(i, o, bias=False),
        bn2d=bn2d,
        bn1d=bn1d,
    )


def _w(channels: int, width: float) -> int:
    units = int(round(channels * width))
    if units < 1:
        raise ModelError(
            f"width {width:g} leaves a layer of {channels} channels with no unit; use a width "
            f"above {0.5 / channels:g} for this model"
        )
    return units


class MLP(nn.Module):
    def __init__(self, kit: LayerKit, in_features: int, classes: int, width: float) -> None:
        super().__init__()
        h = _w(256, width)
        self.net = nn.Sequential(
            nn.Flatten(),
            kit.linear(in_features, h), kit.bn1d(h), nn.ReLU(),
            kit.linear(h, h), kit.bn1d(h), nn.ReLU(),
            kit.linear(h, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    """Conv2/4/6: ``blocks`` stages of two 3x3 convs + 2x2 max-pool, then fc 256-256-classes."""

    def __init__(
        self, kit: LayerKit, input_shape: tuple[int, int, int], classes: int, blocks: int,
        width: float,
    ) -> None:  # fmt: skip
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < 2**blocks:
            raise ModelError(
                f"conv{2 * blocks} pools {blocks} times and needs inputs of at least "
                f"{2**blocks}x{2**blocks}; got {h}x{w}. Use a smaller model (e.g. conv2 or mlp)."
            )
        layers: list[nn.Module] = []
        for stage in range(blocks):
            out = _w(64 * 2**stage, width)
            for _ in range(2):
                layers += [kit.conv(c, out, 3, 1, 1), kit.bn2d(out), nn.ReLU()]
                c = out
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        fc = _w(256, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            kit.linear(c * h * w, fc), kit.bn1d(fc), nn.ReLU(),
            kit.linear(fc, fc), kit.bn1d(fc), nn.ReLU(),
            kit.linear(fc, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block with the parameter-free 'option A' shortcut (CIFAR ResNets)."""

    def __init__(self, kit: LayerKit, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = kit.conv(c_in, c_out, 3, stride, 1)
        self.bn1 = kit.bn2d(c_out)
        self.conv2 = kit.conv(c_out, c_out, 3, 1, 1)
        self.bn2 = kit.bn2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad > 0:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(
        self, kit: LayerKit, input_shape: tuple[int, int, int], classes: int, width: float
    ) -> None:
        super().__init__()
        widths = [_w(16, width), _w(32, width), _w(64, width)]
        self.stem = nn.Sequential(kit.conv(input_shape[0], widths[0], 3, 1, 1), kit.bn2d(widths[0]))
        blocks: list[nn.Module] = []
        c = widths[0]
        for stage, out in enumerate(widths):
            for i in range(3):
                blocks.append(BasicBlock(kit, c, out, 2 if (stage > 0 and i == 0) else 1))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = kit.linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.stem(x)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    masked: bool = True,
    width: float = 1.0,
    keep: float = 0.5,
    affine_bn: bool = False,
) -> nn.Module:
    """Build ``name`` for inputs ``(C, H, W)``; masked layers still hold placeholder weights.

    Call ``apply_prototype`` on a masked model before use.
    """
    if not (width > 0 and math.isfinite(width)):
        raise ModelError(f"width must be a finite number > 0, got {width}")
    kit = make_kit(masked, keep=keep, affine_bn=affine_bn)
    c, h, w = input_shape
    if name == "mlp":
        return MLP(kit, c * h * w, num_classes, width)
    if name in ("conv2", "conv4", "conv6"):
        return ConvNet(kit, input_shape, num_classes, int(name[4:]) // 2, width)
    if name == "resnet20":
        return ResNet20(kit, input_shape, num_classes, width)
    raise ModelError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")


# The largest model pemn-fl builds: 1e8 values are 400 MB of float32 per copy, and every
# client actor and the server hold several. A width that asks for more (a typo, or a model
# file's header saying width=2000) is refused before anything is allocated.
MAX_PARAMETERS = 100_000_000


@functools.lru_cache(maxsize=64)
def parameter_count(name: str, input_shape: tuple[int, int, int], num_classes: int,
                    width: float) -> float:  # fmt: skip
    """Weights and buffers of the dense ``name`` at ``width``, counted on PyTorch's ``meta``
    device (shapes only, no memory): ``inf`` when the shapes overflow."""
    try:
        with torch.device("meta"):
            model = build_model(name, input_shape, num_classes, masked=False, width=width)
    except (RuntimeError, OverflowError, ValueError, TypeError):  # sizes past any int
        return math.inf
    return float(sum(t.numel() for t in (*model.parameters(), *model.buffers())))


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """Names and weight shapes of the masked layers, in canonical order."""
    return [LayerShape(name, tuple(layer.weight.shape)) for name, layer in masked_layers(model)]


def apply_prototype(model: nn.Module, spec: PrototypeSpec) -> str:
    """Install the prototype's frozen weights in every masked layer; return its fingerprint."""
    weights = materialize(spec, layer_shapes(model))
    for name, layer in masked_layers(model):
        layer.set_weight(weights[name])
    return fingerprint(spec, weights)


def seed_scores(model: nn.Module, seed: int) -> None:
    """Reproducible score init (kaiming-uniform, as PEMN), independent of global RNG state."""
    gen = torch.Generator().manual_seed(seed)
    for _, layer in masked_layers(model):
        bound = score_scale(tuple(layer.scores.shape))
        layer.set_scores((torch.rand(layer.scores.shape, generator=gen) * 2 - 1) * bound)


def count_params(model: nn.Module) -> int:
    """Parameters a dense model would train (and FedAvg would send)."""
    return sum(p.numel() for p in model.parameters())
