"""The evolving methods' round: a client's noise mask up, the server's levels down.

See ``evolving`` for the idea and its arithmetic. Per round ``r``:

* downlink ``train.<name>`` to each sampled node: ``ConfigRecord "config"`` = {
  ``server-round``; ``from-round`` ``a``; for every round ``t`` in ``a..r-1`` the node has
  not seen, ``update-t`` (the levels payload everyone applied in round ``t``) and
  ``levels-t`` = [denom, max level, offset]; ``digest`` (8 bytes of ``W_{r-1}``, so the
  node verifies it holds exactly the server's weights)}. A node too far behind the server's
  bounded history (``replica.HISTORY`` rounds) instead gets ``ArrayRecord "snapshot"``:
  ``W_{r-1}`` as float32, counted like every byte.
* the node catches up (skipping rounds it already applied: updates carry their round, so
  a reply lost after a catch-up never double-applies), checks the digest, learns a mask
  over the round's basis (``Scheme.basis``: shared noise ``N_r``, or a fixed lattice) and
  replies ``ConfigRecord "update"`` = {``mask``: its mask, range-coded (``levels_codec``)} +
  ``MetricRecord "metrics"``.
* the server takes the example-weighted vote fraction of the valid masks (summed in
  partition order), turns it into integer levels with the method's *rule*
  (``Scheme.rule``), range-codes them, and applies ``W_r = W_{r-1} + basis * level /
  denom`` itself.

What tells the methods apart is their ``Scheme``; a method module is its scheme and
``method(...)``. The level rules more than one method uses (the dithered vote) live here too,
so no method imports another. The server remembers, per node, only the round whose weights
it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn
from torch.func import functional_call

from pemn_fl import faults
from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import MAX_LEVEL, decode_levels, encode_levels, encode_steps, steps_offset
from pemn_fl.masked import GetSubnet, select
from pemn_fl.methods.base import ClientStep, Method, ServerSide, num_examples_of, partition_of
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.evolving import DENSITY, NOISE_LR, NOISE_SCALE, OPTIONS, network
from pemn_fl.methods.frames.replicated import Parsed, ReplicatedStrategy, Update
from pemn_fl.methods.frames.voting import trim_votes
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import TrainConfig, optimizer_for, train_loop

log = logging.getLogger("pemn_fl.server")
CONFIG, UPDATE, SNAPSHOT = M.CONFIG, M.UPDATE, R.SNAPSHOT


@dataclass(frozen=True)
class Levels:
    """One round's update as everyone applies it: ``W += basis * (levels - offset) / denom``."""

    levels: list[np.ndarray]  # non-negative ints <= max_level, one flat array per layer
    denom: int
    max_level: int
    offset: int = 0


# (weighted mean of the masks per layer, valid replies K, settings, round, server state)
LevelRule = Callable[[list[np.ndarray], int, RunSettings, int, dict], Levels]
Basis = Callable[[RunSettings, int], E.Weights]  # (settings, round) -> the round's directions


@dataclass(frozen=True)
class Scheme:
    """What tells the evolving methods apart: the directions, the client's mask, the rule."""

    rule: LevelRule
    basis: Basis
    signed: bool = False  # ternary client masks (move either way along the basis)
    # Server momentum on the replicated weights (``evolve_momentum``): beta from the settings,
    # or None for none. Every party keeps the velocity ``V`` next to ``W``.
    momentum: Callable[[RunSettings], float] | None = None
    # The basis is the same every round (the lattice), so ``W = W_0 + basis * S`` with ``S``
    # every round's steps summed: with ``--merged-catch-up`` the state is ``S`` itself.
    fixed_basis: bool = False


def integer_state(settings: RunSettings, scheme: Scheme) -> bool:
    """Whether the replicated state is the summed integer steps ``S`` (``merged-catch-up``)."""
    return scheme.fixed_basis and bool(settings[R.MERGED_CATCH_UP])


def state_of(settings: RunSettings, scheme: Scheme) -> E.Weights:
    """The replicated state at round 0 (fresh arrays): ``W_0``, and a zero velocity with
    momentum."""
    net = network(settings)
    if integer_state(settings, scheme):
        return [np.zeros_like(w) for w in net.initial]  # S_0 = 0
    zeros = [np.zeros_like(w) for w in net.initial] if scheme.momentum else []
    return [w.copy() for w in net.initial] + zeros


def weights_of(settings: RunSettings, scheme: Scheme, state: E.Weights) -> E.Weights:
    """The weights a state stands for: ``W`` itself, or ``W_0 + basis * S`` (integer state:
    computed afresh, the same float32 operations on every party, whatever order the steps
    arrived in)."""
    net = network(settings)
    if not integer_state(settings, scheme):
        return state[: len(net.sizes)]
    basis = scheme.basis(settings, 1)
    return [(w + b * s).astype(np.float32) for w, b, s in zip(net.initial, basis, state,
                                                               strict=True)]  # fmt: skip


def state_sizes(settings: RunSettings, scheme: Scheme) -> list[int]:
    """Sizes of the arrays of the replicated state (``W``, then ``V`` with momentum)."""
    sizes = network(settings).sizes
    return sizes + sizes if scheme.momentum else sizes


def step(settings: RunSettings, scheme: Scheme, state: E.Weights, t: int, levels: Levels
         ) -> E.Weights:  # fmt: skip
    """One round's update of the state, float32, the same operations on every party.

    Without momentum ``W += basis * (levels - offset) / denom``; with it ``V = beta * V +
    that``, then ``W += V``.
    """
    basis = scheme.basis(settings, t)
    n = len(network(settings).sizes)
    if integer_state(settings, scheme):  # S += steps: exact in float32 (small integers)
        if levels.denom != 1:
            raise ValueError(f"integer state needs whole steps, got denominator {levels.denom}")
        return [(s + (lv.astype(np.float32) - np.float32(levels.offset))).astype(np.float32)
                for s, lv in zip(state, levels.levels, strict=True)]  # fmt: skip
    if scheme.momentum is None:
        return E.apply_levels(state, basis, levels.levels, levels.denom, levels.offset)
    beta = np.float32(scheme.momentum(settings))
    zero = [np.zeros_like(w) for w in state[:n]]
    update = E.apply_levels(zero, basis, levels.levels, levels.denom, levels.offset)
    velocity = [(beta * v + u).astype(np.float32) for v, u in zip(state[n:], update, strict=True)]
    weights = [(w + v).astype(np.float32) for w, v in zip(state[:n], velocity, strict=True)]
    return weights + velocity


def train_config(settings: RunSettings) -> TrainConfig:
    # Adam: scale-free, so the mask learned does not depend on the noise's magnitude.
    return TrainConfig(
        epochs=settings.local_epochs, batch_size=settings.batch_size, lr=settings[NOISE_LR],
        optimizer="adam", device=settings.torch_device,
    )  # fmt: skip


# -- a client's noise mask -----------------------------------------------------------------
def train_noise_mask(
    model: nn.Module, weights: E.Weights, noise: E.Weights, x: np.ndarray, y: np.ndarray,
    cfg: TrainConfig, *, density: float, seed: int, signed: bool = False,
) -> tuple[list[np.ndarray], float]:  # fmt: skip
    """Learn a sparse mask over ``noise`` on top of frozen ``weights``; return (masks, loss).

    The forward pass uses ``W + N * m`` with ``m`` the top ``density`` fraction of each
    layer's scores; the straight-through gradient ``dL/dW * N`` raises a score exactly
    when adding its noise would lower the loss. Scores start at zero plus a seeded
    perturbation of 1e-6 (a tie-break only), so after training the mask holds the edges
    whose noise agreed most with the local gradients. A fixed density (rather than a
    threshold) makes the uplink's size a setting, not an accident of the data set.

    ``signed``: a ternary mask instead, ``sign(s) * top-density(|s|)``, so a weight can move
    either way along ``noise`` (the lattice variant, whose basis is all-positive). Masks
    come back as int8 arrays in {0, 1} (or {-1, 0, 1}).
    """
    names = [n for n, _ in model.named_parameters()]
    shapes = [tuple(p.shape) for _, p in model.named_parameters()]
    device = cfg.device  # training only; the masks come back to the CPU
    model.to(device)
    base = [torch.from_numpy(w).view(s).to(device) for w, s in zip(weights, shapes, strict=True)]
    nz = [torch.from_numpy(n).view(s).to(device) for n, s in zip(noise, shapes, strict=True)]
    init = torch.Generator().manual_seed(derived_seed(seed, "tie-break"))  # drawn on the CPU
    centre = 0.5 if signed else 0.0  # signed: tie-breaks of both signs
    scores = [((torch.rand(s, generator=init) - centre) * 1e-6).to(device).requires_grad_(True)
              for s in shapes]  # fmt: skip

    def forward(batch: torch.Tensor) -> torch.Tensor:
        params = {
            name: b + z * GetSubnet.apply(s, density, signed)
            for name, b, z, s in zip(names, base, nz, scores, strict=True)
        }
        return functional_call(model, params, (batch,))

    try:
        last = train_loop(model, forward, optimizer_for(scores, cfg), x, y, cfg, seed=seed)
    finally:
        model.to("cpu")
    masks = [
        select(s.detach().cpu(), density, signed).reshape(-1).numpy().astype(np.int8)
        for s in scores
    ]
    return masks, last


# -- the dithered vote (evolve_dither, evolve_momentum) ------------------------------------
DITHER_LEVELS = Option("dither-levels", 2, "grid steps of the dithered vote (1 = one bit)",
                       low=1, high=MAX_LEVEL)  # fmt: skip


def dithered(fraction: list[np.ndarray], q: int, seed: int, server_round: int) -> list[np.ndarray]:
    """``floor(q * fraction + u)``, ``u ~ U[0, 1)`` seeded per round and layer."""
    levels = []
    for i, f in enumerate(fraction):
        u = np.random.default_rng(derived_seed(seed, f"dither/{server_round}/{i}")).random(f.size)
        levels.append(np.minimum(np.floor(q * f + u), q).astype(np.int16))
    return levels


def dither_rule(
    fraction: list[np.ndarray], k: int, settings: RunSettings, server_round: int, state: dict
) -> Levels:
    q = int(settings[DITHER_LEVELS])
    return Levels(dithered(fraction, q, settings.seed, server_round), q, q)


# -- client ------------------------------------------------------------------------------
FIELDS = ("update", "levels")  # one round's wire fields: the levels payload, [denom, max, offset]


def levels_of(net: E.Network, t: int, fields: Mapping[str, Any]) -> Levels:
    """Round ``t``'s wire fields (``FIELDS``) decoded: its levels, denominator and offset."""
    denom, max_level, offset = (int(v) for v in fields["levels"])
    if not 1 <= max_level <= MAX_LEVEL:  # bounds the header the decoder will read
        raise MaskPayloadError(f"round {t}: max level {max_level} outside [1, {MAX_LEVEL}]")
    levels = decode_levels(
        bytes(fields["update"]), fingerprint=net.fingerprint, tag=t,
        layer_sizes=net.sizes, max_level=max_level,
    )  # fmt: skip
    return Levels(levels, denom, max_level, offset)


def apply_round(settings: RunSettings, scheme: Scheme) -> R.Apply:
    """Replay one logged round: decode its levels and add them along the round's basis."""
    net = network(settings)

    def apply(state: E.Weights, t: int, fields: Mapping[str, Any]) -> E.Weights:
        return step(settings, scheme, state, t, levels_of(net, t, fields))

    return apply


def catch_up(
    settings: RunSettings, scheme: Scheme, cfg: ConfigRecord, snapshot: ArrayRecord | None,
    weights: E.Weights, held: int,
) -> tuple[E.Weights, int]:  # fmt: skip
    """Bring ``weights`` (of round ``held``) to round ``server-round - 1`` (``replica``)."""
    return R.catch_up(cfg, snapshot, weights, held, state_sizes(settings, scheme),
                      apply_round(settings, scheme), FIELDS)  # fmt: skip


def client_step_for(name: str, scheme: Scheme) -> ClientStep:
    """The client step of an evolving method (its own state keys, its scheme)."""

    def step(msg: Message, context: Context, settings: RunSettings) -> Message:
        return client_step(msg, context, settings, name, scheme)

    return step


def client_step(
    msg: Message, context: Context, settings: RunSettings, name: str, scheme: Scheme
) -> Message:
    pid, n = partition_of(context)
    cfg = msg.content[CONFIG]
    snapshot = msg.content.array_records.get(SNAPSHOT)
    net = network(settings)
    state, held = R.load(context, name, lambda: state_of(settings, scheme))
    try:
        state, held = catch_up(settings, scheme, cfg, snapshot, state, held)
    except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(f"partition {pid} rejected the downlink: {exc}") from None
    R.store(context, name, state, held)
    weights = weights_of(settings, scheme, state)
    server_round = held + 1
    x, y = N.client_data(settings, pid, n)
    masks, loss = train_noise_mask(
        N.plain_model(settings), weights, scheme.basis(settings, server_round), x, y,
        train_config(settings), density=settings[DENSITY], signed=scheme.signed,
        seed=derived_seed(settings.seed, f"batches/{pid}/{server_round}"),
    )  # fmt: skip
    if faults.is_byzantine(settings, pid, n):  # --byzantine: vote against what it learned
        masks = [-m if scheme.signed else 1 - m for m in masks]
    shift = 1 if scheme.signed else 0  # ternary {-1, 0, 1} travels as {0, 1, 2}
    payload = encode_levels(
        [m.astype(np.int16) + shift for m in masks], fingerprint=net.fingerprint,
        tag=server_round, max_level=1 + shift,
    )  # fmt: skip
    return M.reply(msg, {"mask": payload}, num_examples=len(y), train_loss=loss,
                   compact=settings.compact_replies)  # fmt: skip


ATTACK = "the complement of its noise mask (its negation for ternary masks)"


# -- server ------------------------------------------------------------------------------
Mask = list[np.ndarray]  # a client's noise mask, one array per layer
Vote = Parsed[Mask]


class EvolvingVotes(ReplicatedStrategy[Mask]):
    """Server of the evolving-prototype methods: relay votes as levels, keep ``W`` in step."""

    def __init__(
        self, *, settings: RunSettings, sampler: RoundSampler, scheme: Scheme,
        message_type: str,
    ) -> None:  # fmt: skip
        super().__init__(settings=settings, sampler=sampler, message_type=message_type,
                         initial=state_of(settings, scheme), fields=FIELDS)  # fmt: skip
        self.scheme = scheme
        self.rule_state: dict = {}  # server-only memory of a rule (e.g. an error accumulator)
        self.net = network(settings)
        self.data = N.dataset_of(settings)  # bounds a reply's num-examples

    @property
    def weights(self) -> E.Weights:
        """``W`` of the last aggregated round (everyone who caught up holds the same)."""
        return weights_of(self.settings, self.scheme, self.replica.state)

    def merger(self) -> R.Merge | None:
        return self.merge if integer_state(self.settings, self.scheme) else None

    def merge(self, first: int, made: list[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
        """Rounds' integer steps summed into one levels payload, tagged with ``first``."""
        total = [np.zeros(n, dtype=np.int64) for n in self.net.sizes]
        for t, fields in made:
            upd = levels_of(self.net, t, fields)
            for acc, lv in zip(total, upd.levels, strict=True):
                acc += lv.astype(np.int64) - upd.offset
        offset = steps_offset(total)  # encode_steps' offset, which apply reads from "levels"
        return {"update": encode_steps(total, fingerprint=self.net.fingerprint, tag=first),
                "levels": [1, 2 * offset, offset]}

    def check(self, server_round: int) -> Callable[[Message], Vote]:
        shift = 1 if self.scheme.signed else 0

        def check(reply: Message) -> Vote:
            metrics = M.metrics_of(reply)
            mask = decode_levels(
                bytes(reply.content[UPDATE]["mask"]), fingerprint=self.net.fingerprint,
                tag=server_round, layer_sizes=self.net.sizes, max_level=1 + shift,
            )  # fmt: skip
            return ([m.astype(np.int8) - shift for m in mask],
                    num_examples_of(metrics, len(self.data.y_train)),
                    float(metrics.get("train-loss", float("nan"))))  # fmt: skip

        return check

    def admit(self, server_round: int, kept: list[tuple[int, Vote]]) -> list[tuple[int, Vote]]:
        """``--trim-votes``: the votes farthest from the median left out."""
        kept, _ = trim_votes(kept, [mask for _, (mask, _, _) in kept],
                             self.settings.trim_votes, server_round)  # fmt: skip
        return kept

    def update(self, server_round: int, masks: list[Mask], weights: list[float]) -> Update:
        fraction = E.vote_fraction(masks, weights)
        upd = self.scheme.rule(fraction, len(masks), self.settings, server_round,
                               self.rule_state)  # fmt: skip
        payload = encode_levels(
            upd.levels, fingerprint=self.net.fingerprint, tag=server_round,
            max_level=upd.max_level,
        )  # fmt: skip
        new = step(self.settings, self.scheme, self.replica.state, server_round, upd)
        return {"update": payload, "levels": [upd.denom, upd.max_level, upd.offset]}, new

    def global_arrays(self) -> ArrayRecord:
        return ArrayRecord([w.copy() for w in self.weights])

    def summary(self) -> None:
        log.info("EvolvingVotes: noise-scale=%s density=%s", self.settings[NOISE_SCALE],
                 self.settings[DENSITY])  # fmt: skip


def server_for(name: str, scheme: Scheme) -> Callable[[RunSettings, RoundSampler], ServerSide]:
    """The server factory of an evolving method."""

    def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
        model = N.plain_model(settings)
        strategy = EvolvingVotes(
            settings=settings, sampler=sampler, scheme=scheme, message_type=f"train.{name}"
        )
        return ServerSide(
            strategy, model, ArrayRecord([w.copy() for w in strategy.weights]),
            lambda arrays: E.load_weights(model, arrays.to_numpy_ndarrays()),
        )  # fmt: skip

    return server


def method(name: str, scheme: Scheme, *, label: str, marker: str, description: str,
           options: tuple[Option, ...] = (), **entry: Any) -> Method:  # fmt: skip
    """The registry entry of an evolving method: its scheme is what tells it apart
    (``entry``: the rest of its ``Method``, e.g. its display order and tuning grid)."""
    return Method(name=name, label=label, client_step=client_step_for(name, scheme),
                  server=server_for(name, scheme), num_params=E.num_params, marker=marker,
                  description=description, attack=ATTACK, options=(*OPTIONS, *options),
                  **entry)  # fmt: skip
