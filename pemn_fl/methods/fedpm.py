"""FedPM as published (Isik et al., ICLR 2023): probabilistic masks, float probabilities down.

* Model: the run's frozen prototype ``W_0`` (signed constant by default, as FedPM), every
  edge gated by a Bernoulli mask with a learned probability (``probmask``).
* Downlink ``train.fedpm``: ``ArrayRecord "probs"``, the global probabilities as float32
  (32 bits per edge, counted like every byte: FedPM's paper does not count them) +
  ``ConfigRecord "config"`` {``server-round``}.
* Client: scores ``logit(theta)``, local training with Adam (``--pm-lr``, FedPM uses 0.1),
  one Bernoulli sample of the trained probabilities up, coded by our mask codec (packed,
  or a Golomb-Rice delta against the mode ``theta > 1/2`` when that is smaller; FedPM only
  *computes* the binary entropy as its rate).
* Server: a Beta(1, 1) prior **reset every round**, as in FedPM's code (``reset_prior``):
  ``theta = (1 + sum m) / (2 + K)`` over the K valid samples, unweighted. (FedPM takes the
  posterior mode and clamps it; the mean never reaches 0 or 1, so no clamp is needed.)
* Evaluation: one mask sampled from ``theta`` (seeded by the probabilities themselves, so
  it is reproducible), as FedPM evaluates a sampled network.

Where we differ from FedPM's setting: same clients, rounds and local epochs as every other
method here (FedPM trains 3 local epochs for hundreds of rounds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.codec import decode_mask, encode_mask
from pemn_fl.config import RunSettings
from pemn_fl.methods.base import Method, ServerEvaluation, ServerSide, partition_of, screen
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import probmask as PM
from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")

NAME = "fedpm"
CONFIG, PROBS, UPDATE = M.CONFIG, "probs", M.UPDATE


def client_step(msg: Message, context: Context, settings: RunSettings) -> Message:
    pid, n = partition_of(context)
    net = E.network(settings)
    server_round = int(msg.content[CONFIG][M.ROUND])
    theta = [a.astype(np.float64) for a in msg.content[PROBS].to_numpy_ndarrays()]
    if [t.size for t in theta] != net.sizes or not all(
        np.isfinite(t).all() and t.min() >= 0 and t.max() <= 1 for t in theta
    ):
        raise RuntimeError(f"partition {pid} rejected the downlink: probabilities do not fit "
                           "this model or lie outside [0, 1]")  # fmt: skip
    q, loss, examples = PM.local_round(settings, theta, pid, n, server_round)
    mask = PM.sample(q, derived_seed(settings.seed, f"upload/{pid}/{server_round}"))
    payload = encode_mask([m.astype(bool) for m in mask], fingerprint=net.fingerprint,
                          reference=PM.mode(theta), reference_id=server_round)  # fmt: skip
    return M.reply(msg, {"mask": payload}, num_examples=examples, train_loss=loss,
                   compact=settings.compact_replies)  # fmt: skip


class ProbabilisticMasks(ServerEvaluation, Strategy):
    """FedPM's server: float probabilities down, mask samples up, Beta posterior reset."""

    def __init__(self, *, settings: RunSettings, sampler: RoundSampler,
                 message_type: str = f"train.{NAME}") -> None:  # fmt: skip
        self.settings, self.sampler, self.message_type = settings, sampler, message_type
        self.net = E.network(settings)
        self.theta: PM.Probs = [np.full(s, 0.5) for s in self.net.sizes]
        self.sent: PM.Probs = self.theta  # what the last downlink carried
        self.rejected = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        probs = ArrayRecord([t.astype(np.float32) for t in self.theta])
        # Clients train from exactly what was sent: the float32 probabilities.
        self.sent = [a.astype(np.float64) for a in probs.to_numpy_ndarrays()]
        return [
            Message(
                content=RecordDict({
                    CONFIG: ConfigRecord({M.ROUND: server_round}), PROBS: probs,
                }),
                dst_node_id=node, message_type=self.message_type,
            )
            for node in self.sampler(server_round)
        ]  # fmt: skip

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        reference = PM.mode(self.sent)

        def check(reply: Message) -> tuple[list[np.ndarray], float]:
            mask = decode_mask(
                bytes(reply.content[UPDATE]["mask"]), fingerprint=self.net.fingerprint,
                layer_sizes=tuple(self.net.sizes), references={server_round: reference},
            )  # fmt: skip
            return mask, float(M.metrics_of(reply).get(M.TRAIN_LOSS, float("nan")))

        kept, self.rejected = screen(replies, self.sampler, server_round, check)
        total = [np.zeros(s) for s in self.net.sizes]
        for _, (mask, _) in kept:
            for acc, m in zip(total, mask, strict=True):
                acc += m.reshape(-1)
        valid, losses = len(kept), [loss for _, (_, loss) in kept]
        if not valid:
            log.warning("round %s: no valid mask; probabilities unchanged", server_round)
            return None, None
        self.theta = [(1.0 + s) / (2.0 + valid) for s in total]  # Beta(1,1), reset each round
        record = ArrayRecord([t.astype(np.float32) for t in self.theta])
        return record, MetricRecord({"train-loss": float(np.mean(losses))})

    def summary(self) -> None:
        log.info("FedPM: pm-lr=%s, posterior reset every round", self.settings[PM.PM_LR])


def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
    model = N.plain_model(settings)
    strategy = ProbabilisticMasks(settings=settings, sampler=sampler)
    weights = list(strategy.net.initial)
    return ServerSide(
        strategy, model, ArrayRecord([t.astype(np.float32) for t in strategy.theta]),
        lambda arrays: PM.install_sampled(model, weights, arrays),
    )  # fmt: skip


METHOD = Method(
    name=NAME,
    label="FedPM (float probabilities down)",
    client_step=client_step,
    server=server,
    num_params=E.num_params,
    marker="-P",
    compact=PM.compact,
    description="Bernoulli masks over the frozen prototype; float32 probabilities down "
    "(Isik et al. 2023)",
    options=(PM.PM_LR,),
    order=80,
    grid=(
        # First: the configuration a partial sweep (--max-configs) runs first, the best on
        # digits where that is known.
        {"pm-lr": 0.3}, {"pm-lr": 0.1}, {"pm-lr": 0.03}),
)
