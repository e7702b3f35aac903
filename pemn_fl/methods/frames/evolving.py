"""Evolving prototype: a model is its seed plus every round's masks, and no float ever travels.

The frozen-prototype protocol (``methods/pemn.py``) squeezes ten clients' learning into
one 1-bit top-k vote per edge, and the network can never leave its random weights. Here
the weights *move*, but only along directions every party can regenerate:

* ``W_0`` is the run's prototype (``PrototypeSpec``: seed, strategy, init), built by
  everyone from the seed, exactly as PEMN-FL's frozen weights.
* In round ``r`` every party draws the same *noise* ``N_r`` from ``(seed, r)``: per layer,
  ``+-noise_scale * he_std`` signs (a signed-constant tensor, fresh every round).
* A client learns a sparse mask ``m`` over ``N_r`` (edge-popup's straight-through trick,
  ``evolving_round.train_noise_mask``) and sends the mask, range-coded.
* The server turns the masks into one integer *level* per weight (the method decides how:
  vote counts, a seeded stochastic rounding, ...) and everybody applies
  ``W_r = W_{r-1} + N_r * level / denominator`` in float32, with the same numpy
  operations in the same order, so server and clients hold bit-identical weights (checked
  by ``replica.digest``, 8 bytes sent with every update).

This is FedMRN's idea (Li et al., ACM MM 2024: seeded noise times a learned 1-bit mask)
with the float downlink replaced by the vote itself, so both directions are masks/levels.
The price is catch-up: weights evolve, so a client that missed rounds must receive those
rounds' updates (or, past the server's bounded history, a float snapshot); both are
counted like any other byte.

Plain functions over numpy arrays, so the benchmark can call them in a loop; the round
around them (client step and server) is ``evolving_round``. Here too: the family's options
(``OPTIONS``, which every ``evolve*`` method reads) and the run's network (``network``: shapes,
``W_0`` and its fingerprint), which the probabilistic-mask methods train over as well.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.options import Option
from pemn_fl.prototype import LayerShape, derived_seed, fingerprint, he_std, materialize

Weights = list[np.ndarray]  # one flat float32 array per weight tensor, in parameter order

# A round's noise step of 100 He stds already wipes out any network; far larger values
# overflow the float32 weights every party replicates (1e300 made NaN and exited 0).
MAX_NOISE_SCALE = 100.0
# -- the evolving family's options (every evolve* method reads these) --------------------
NOISE_SCALE = Option("noise-scale", 1.0, "round noise, in units of each layer's He std",
                     low=0, high=MAX_NOISE_SCALE, low_open=True)  # fmt: skip
DENSITY = Option("density", 0.05, "fraction of weights a client's noise mask switches on",
                 low=0, high=1, low_open=True, high_open=True)  # fmt: skip
NOISE_LR = Option("noise-lr", 0.001, "Adam learning rate of the noise-mask scores", low=0,
                  low_open=True)  # fmt: skip
OPTIONS = (NOISE_SCALE, DENSITY, NOISE_LR)


def weight_shapes(model: nn.Module) -> list[LayerShape]:
    """Every trainable tensor of a dense model (conv/linear weights, no biases, non-affine BN)."""
    shapes = [LayerShape(name, tuple(p.shape)) for name, p in model.named_parameters()]
    for s in shapes:
        if len(s.shape) < 2:
            raise ValueError(
                f"parameter {s.name} of shape {s.shape} is not a conv/linear weight; the "
                "evolving prototype needs bias-free layers and non-affine BatchNorm"
            )
    return shapes


def initial_weights(tensors: dict[str, torch.Tensor], shapes: list[LayerShape]) -> Weights:
    """``W_0``: the materialised prototype, flattened to float32 in parameter order."""
    return [tensors[s.name].numpy().astype(np.float32).reshape(-1).copy() for s in shapes]


def round_noise(seed: int, stream: str, shapes: list[LayerShape], scale: float) -> Weights:
    """``+-scale * he_std`` per weight, drawn from ``(seed, stream, layer)``.

    ``stream`` names the draw (e.g. ``"noise/7"`` for round 7's shared noise, or
    ``"noise/7/3"`` for partition 3's own noise), so any party can regenerate it.
    """
    out = []
    for s in shapes:
        rng = np.random.default_rng(derived_seed(seed, f"{stream}/{s.name}"))
        signs = rng.integers(0, 2, size=s.numel, dtype=np.int8).astype(np.float32) * 2.0 - 1.0
        out.append((signs * np.float32(scale * he_std(s))).astype(np.float32))
    return out


def lattice_steps(shapes: list[LayerShape], scale: float) -> Weights:
    """``+scale * he_std`` for every weight: the fixed basis of the signed (lattice) variant."""
    return [np.full(s.numel, scale * he_std(s), dtype=np.float32) for s in shapes]


def apply_levels(
    weights: Weights, noise: Weights, levels: list[np.ndarray], denom: int, offset: int = 0
) -> Weights:
    """``W + N * (level - offset) / denom``, float32, the one update rule every party runs.

    ``offset`` lets signed steps travel as non-negative symbols (``level = step + offset``).
    """
    if denom < 1:
        raise ValueError(f"denominator must be >= 1, got {denom}")
    inv = np.float32(1.0) / np.float32(denom)
    return [
        (w + n * ((lv.astype(np.float32) - np.float32(offset)) * inv)).astype(np.float32)
        for w, n, lv in zip(weights, noise, levels, strict=True)
    ]


def load_weights(model: nn.Module, weights: Weights) -> None:
    """Install flat ``weights`` into a dense model (for evaluation)."""
    with torch.no_grad():
        for (_, p), w in zip(model.named_parameters(), weights, strict=True):
            p.copy_(torch.from_numpy(w).view_as(p))


def vote_fraction(masks: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    """Weighted mean of the clients' masks per edge, float64: in [0, 1] (or [-1, 1] signed)."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if not len(masks) or not total > 0 or not math.isfinite(total):
        raise ValueError("vote_fraction needs at least one mask and a positive finite weight sum")
    out = [np.zeros(m.size, dtype=np.float64) for m in masks[0]]
    # Summed in partition order by the caller, so the float sum is reproducible.
    for wi, mask in zip(w, masks, strict=True):
        for acc, layer in zip(out, mask, strict=True):
            acc += wi * layer
    return [acc / total for acc in out]


# -- the run's network -------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    shapes: tuple[LayerShape, ...]
    initial: tuple[np.ndarray, ...]  # W_0, read-only
    fingerprint: str

    @property
    def sizes(self) -> list[int]:
        return [s.numel for s in self.shapes]


@functools.lru_cache(maxsize=8)
def network(settings: RunSettings) -> Network:
    """Shapes, ``W_0`` (the prototype) and its fingerprint; cached per process."""
    shapes = weight_shapes(N.plain_model(settings))
    tensors = materialize(settings.prototype_spec, shapes)
    initial = initial_weights(tensors, shapes)  # the same tensors the fingerprint hashes
    for w in initial:
        w.setflags(write=False)
    return Network(tuple(shapes), tuple(initial), fingerprint(settings.prototype_spec, tensors))


def noise(settings: RunSettings, server_round: int) -> Weights:
    """Round ``server_round``'s shared noise ``N_r`` (every party regenerates it)."""
    return round_noise(
        settings.seed, f"noise/{server_round}", list(network(settings).shapes),
        settings.scheduled(settings[NOISE_SCALE], server_round),
    )  # fmt: skip


def num_params(settings: RunSettings) -> int:
    return sum(network(settings).sizes)
