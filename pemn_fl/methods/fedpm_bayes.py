"""FedPM with its Beta posterior carried across rounds, and nothing but integers on the wire.

FedPM (``fedpm``) resets its Beta posterior every round, so its "Bayesian" aggregation is
the mean of one round's samples, and it sends float32 probabilities down. Here the
posterior is the model, replicated on every party (``replica``):

* state: ``alpha``, ``beta`` per edge (float32), starting at Beta(1, 1); the global
  probabilities are the posterior mean ``theta = alpha / (alpha + beta)``;
* uplink: one Bernoulli sample ``m`` of the client's trained probabilities ``q``, drawn
  with uniforms the server can regenerate (seeded by run seed, round and partition) and
  sent as ``m XOR r``, where ``r`` is the sample of ``theta`` those uniforms give
  (``probmask.coupled_sample``); the server rebuilds ``r`` and so ``m``. The XOR is 1 with
  probability ``|q - theta|``, so the range-coded payload (``levels_codec``) shrinks as
  clients agree with the global model, instead of costing ~1 bit per edge;
* downlink: the round's vote counts ``c`` (0..K, ``levels_codec``) and ``K``; everyone
  applies ``alpha = 1 + rho (alpha - 1) + c``, ``beta = 1 + rho (beta - 1) + K - c`` in
  float32 (``rho`` = ``--posterior-decay``; 1 keeps every vote forever, smaller values
  forget old rounds so the posterior can keep moving). A node that missed rounds catches up
  from the relayed counts or a snapshot, both counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_levels, encode_levels
from pemn_fl.methods.base import Method, ServerSide, partition_of
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import probmask as PM
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.replicated import Parsed, ReplicatedStrategy, Update
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")

NAME = "fedpm_bayes"
POSTERIOR_DECAY = Option("posterior-decay", 1.0, "weight of past rounds' votes in the carried "
                         "posterior (1 = keep all)", low=0, high=1)  # fmt: skip
CONFIG, UPDATE = M.CONFIG, M.UPDATE
FIELDS = ("counts", "k")  # one round's wire fields: the coded counts and the number of votes
MAX_VOTES = 4096  # levels_codec's bound on K


def initial_state(settings: RunSettings) -> R.State:
    """``[alpha_1..alpha_L, beta_1..beta_L]``: Beta(1, 1) for every edge."""
    sizes = E.network(settings).sizes
    return [np.ones(s, dtype=np.float32) for s in sizes + sizes]


def theta_of(state: R.State) -> PM.Probs:
    half = len(state) // 2
    return PM.posterior_mean(state[:half], state[half:])


def apply_counts(state: R.State, counts: list[np.ndarray], k: int, decay: float) -> R.State:
    """The one posterior update every party runs, float32, same operations in the same order."""
    half = len(state) // 2
    one, rho, kk = np.float32(1.0), np.float32(decay), np.float32(k)
    c = [x.astype(np.float32) for x in counts]
    alpha = [(one + rho * (a - one) + ci).astype(np.float32)
             for a, ci in zip(state[:half], c, strict=True)]  # fmt: skip
    beta = [(one + rho * (b - one) + (kk - ci)).astype(np.float32)
            for b, ci in zip(state[half:], c, strict=True)]  # fmt: skip
    return alpha + beta


def apply_round(settings: RunSettings) -> R.Apply:
    net = E.network(settings)

    def apply(state: R.State, t: int, fields: Mapping[str, Any]) -> R.State:
        k = int(fields["k"])
        if not 1 <= k <= MAX_VOTES:
            raise MaskPayloadError(f"round {t}: vote count {k} outside [1, {MAX_VOTES}]")
        counts = decode_levels(bytes(fields["counts"]), fingerprint=net.fingerprint, tag=t,
                               layer_sizes=net.sizes, max_level=k)  # fmt: skip
        return apply_counts(state, counts, k, float(settings[POSTERIOR_DECAY]))

    return apply


def uniforms_seed(settings: RunSettings, pid: int, server_round: int) -> int:
    """Seed of partition ``pid``'s shared uniforms in ``server_round`` (both sides derive it)."""
    return derived_seed(settings.seed, f"fedpm-uniforms/{pid}/{server_round}")


def client_step(msg: Message, context: Context, settings: RunSettings) -> Message:
    pid, n = partition_of(context)
    cfg = msg.content[CONFIG]
    net = E.network(settings)
    state, held = R.load(context, NAME, lambda: initial_state(settings))
    try:
        state, held = R.catch_up(cfg, msg.content.array_records.get(R.SNAPSHOT), state, held,
                                 net.sizes + net.sizes, apply_round(settings), FIELDS)  # fmt: skip
    except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(f"partition {pid} rejected the downlink: {exc}") from None
    R.store(context, NAME, state, held)
    server_round = held + 1
    theta = theta_of(state)
    q, loss, examples = PM.local_round(settings, theta, pid, n, server_round)
    mask, ref = PM.coupled_sample(q, theta, uniforms_seed(settings, pid, server_round))
    payload = encode_levels([m ^ r for m, r in zip(mask, ref, strict=True)],
                            fingerprint=net.fingerprint, tag=server_round, max_level=1)  # fmt: skip
    return M.reply(msg, {"mask": payload}, num_examples=examples, train_loss=loss,
                   compact=settings.compact_replies)  # fmt: skip


Sample = list[np.ndarray]  # a reply's mask sample, one array per layer


class CarriedPosterior(ReplicatedStrategy[Sample]):
    """Server: decode samples against ``theta``, count them, relay the counts."""

    def __init__(self, *, settings: RunSettings, sampler: RoundSampler,
                 message_type: str = f"train.{NAME}") -> None:  # fmt: skip
        super().__init__(settings=settings, sampler=sampler, message_type=message_type,
                         initial=initial_state(settings), fields=FIELDS)  # fmt: skip
        self.net = E.network(settings)

    def check(self, server_round: int) -> Callable[[Message], Parsed[Sample]]:
        theta = theta_of(self.replica.state)  # the posterior every sample is coded against

        def check(reply: Message) -> Parsed[Sample]:
            flips = decode_levels(
                bytes(reply.content[UPDATE]["mask"]), fingerprint=self.net.fingerprint,
                tag=server_round, layer_sizes=self.net.sizes, max_level=1,
            )  # fmt: skip
            pid = self.sampler.order_key(reply.metadata.src_node_id)
            seed = uniforms_seed(self.settings, pid, server_round)
            _, ref = PM.coupled_sample(theta, theta, seed)
            mask = [f.astype(np.uint8) ^ r for f, r in zip(flips, ref, strict=True)]
            # One vote per client whatever its data (FedPM counts samples): weight 1.
            return mask, 1.0, float(M.metrics_of(reply).get(M.TRAIN_LOSS, float("nan")))

        return check

    def admit(self, server_round: int, kept: list[tuple[int, Parsed[Sample]]]
              ) -> list[tuple[int, Parsed[Sample]]]:  # fmt: skip
        return kept[:MAX_VOTES]  # levels_codec's bound on K

    def update(self, server_round: int, masks: list[Sample], weights: list[float]) -> Update:
        counts = [np.zeros(s, dtype=np.int64) for s in self.net.sizes]
        for mask in masks:
            for acc, m in zip(counts, mask, strict=True):
                acc += m
        k = len(masks)
        payload = encode_levels(counts, fingerprint=self.net.fingerprint, tag=server_round,
                                max_level=k)  # fmt: skip
        state = apply_counts(self.replica.state, counts, k,
                             float(self.settings[POSTERIOR_DECAY]))  # fmt: skip
        return {"counts": payload, "k": k}, state

    def global_arrays(self) -> ArrayRecord:
        return ArrayRecord([t.astype(np.float32) for t in theta_of(self.replica.state)])

    def summary(self) -> None:
        log.info("FedPM carried posterior: pm-lr=%s posterior-decay=%s",
                 self.settings[PM.PM_LR], self.settings[POSTERIOR_DECAY])  # fmt: skip


def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
    model = N.plain_model(settings)
    strategy = CarriedPosterior(settings=settings, sampler=sampler)
    weights = list(strategy.net.initial)
    initial = ArrayRecord([t.astype(np.float32) for t in theta_of(strategy.replica.state)])
    return ServerSide(strategy, model, initial,
                      lambda arrays: PM.install_sampled(model, weights, arrays))  # fmt: skip


METHOD = Method(
    name=NAME,
    label="FedPM, carried posterior, counts down",
    client_step=client_step,
    server=server,
    num_params=E.num_params,
    marker="-D",
    compact=PM.compact,
    description="FedPM masks; Beta posterior replicated on every party; vote counts down, "
    "samples sent as flips against a shared-randomness sample of the posterior",
    options=(PM.PM_LR, POSTERIOR_DECAY),
    order=90,
    grid=(
        # It spends its budget on how fast the carried posterior forgets.
        {"posterior-decay": 0.4}, {"posterior-decay": 0.7}, {"posterior-decay": 1.0}),
)
