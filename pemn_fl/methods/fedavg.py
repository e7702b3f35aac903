"""Dense FedAvg, the baseline: float32 weights down and up, Flower's own ``FedAvg``.

``SampledFedAvg`` is Flower's ``FedAvg`` with one change: it trains on the node sample the
shared ``RoundSampler`` draws, so every method sees the same clients in every round, and it
averages replies in partition order so the float sum is reproducible. ``--robust median`` and
``--robust trimmed-mean`` put the same sampling and screening in front of Flower's own
``FedMedian`` and ``FedTrimmedAvg`` (coordinate-wise median; mean after cutting the top and
bottom ``TRIM`` of each coordinate), the classic defences against Byzantine updates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg

from pemn_fl import faults
from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.methods.base import Method, ServerSide, num_examples_of, partition_of, screen
from pemn_fl.methods.frames.dense import DENSE_LR, DENSE_OPTIONS
from pemn_fl.models import count_params
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import train

log = logging.getLogger("pemn_fl.server")

NAME = "fedavg"
TRIM = 0.2  # --robust trimmed-mean: share of each coordinate's values cut at each end
ROBUST = Option("robust", "none", "FedAvg's aggregation: the mean, or Flower's FedMedian or "
                "FedTrimmedAvg", choices=("none", "median", "trimmed-mean"))  # fmt: skip


def client_step(msg: Message, context: Context, settings: RunSettings) -> Message:
    pid, n = partition_of(context)
    model = N.dense_model(settings)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = N.client_data(settings, pid, n)
    server_round = int(msg.content[M.CONFIG][M.ROUND])
    loss = train(
        model, x, y,
        settings.train_config(settings.scheduled(settings[DENSE_LR], server_round)),
        seed=derived_seed(settings.seed, f"batches/{pid}/{server_round}"),
    )  # fmt: skip
    state = model.state_dict()
    if faults.is_byzantine(settings, pid, n):
        # The update negated and scaled: W - s * (W_local - W), a finite, well-shaped model.
        start = msg.content["arrays"].to_torch_state_dict()
        state = {k: start[k] - faults.ATTACK_SCALE * (v - start[k]) if v.is_floating_point()
                 else v for k, v in state.items()}  # fmt: skip
    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
        }
    )
    return Message(content=content, reply_to=msg)


class SampledFedAvg(FedAvg):
    """Flower's FedAvg, training on the shared sampler's nodes (same clients as PEMN-FL)."""

    def __init__(
        self, sampler: RoundSampler, message_type: str = f"train.{NAME}",
        max_examples: int = 2**31 - 1, **kwargs: object,
    ) -> None:  # fmt: skip
        super().__init__(fraction_evaluate=0.0, **kwargs)
        self.sampler = sampler
        self.message_type = message_type
        self.max_examples = max_examples  # bound on a reply's num-examples (the train set)
        self.expected: dict[str, tuple[tuple[int, ...], object]] = {}
        self.rejected = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._remember_shapes(arrays)
        config[M.ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(content=record, dst_node_id=node, message_type=self.message_type)
            for node in self.sampler(server_round)
        ]

    def _remember_shapes(self, arrays: ArrayRecord) -> None:
        """Remember the model's tensors, so a reply of other keys or shapes is rejected."""
        self.expected = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}

    def _check(self, reply: Message) -> Message:
        """The reply itself; ``ValueError`` unless it is a model of the right shape, finite."""
        arrays, metrics = reply.content["arrays"], reply.content["metrics"]
        num_examples_of(metrics, self.max_examples)
        got = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}
        if got != self.expected:
            raise ValueError("the reply's tensors do not match the model's keys, shapes and "
                             "dtypes")  # fmt: skip
        if not all(np.isfinite(a).all() for a in arrays.to_numpy_ndarrays()):
            raise ValueError("the reply holds non-finite weights")
        return reply

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Flower's FedAvg would stop the run on one reply of wrong keys or shapes, and
        # average a NaN into the model: each reply is checked first, a bad one is rejected
        # and logged, and the round goes on with the rest (as every other method does).
        # ``screen`` also keeps them in partition order (not by random node id or arrival),
        # so the floating-point average is reproducible.
        kept, self.rejected = screen(replies, self.sampler, server_round, self._check)
        valid = [reply for _, reply in kept]
        if not valid:
            log.warning("round %s: no valid update; model unchanged", server_round)
            return None, None
        return super().aggregate_train(server_round, valid)


class SampledFedMedian(SampledFedAvg, FedMedian):
    """``--robust median``: Flower's ``FedMedian`` behind the same sampling and screening."""


class SampledFedTrimmedAvg(SampledFedAvg, FedTrimmedAvg):
    """``--robust trimmed-mean``: Flower's ``FedTrimmedAvg`` (``beta=TRIM``), same sampling."""


def sampled_strategy(settings: RunSettings, sampler: RoundSampler, **kwargs: object
                     ) -> SampledFedAvg:  # fmt: skip
    """The FedAvg-family strategy the ``robust`` option names."""
    if settings[ROBUST] == "median":
        return SampledFedMedian(sampler, **kwargs)
    if settings[ROBUST] == "trimmed-mean":
        return SampledFedTrimmedAvg(sampler, beta=TRIM, **kwargs)
    return SampledFedAvg(sampler, **kwargs)


def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
    model = N.dense_model(settings)
    return ServerSide(
        sampled_strategy(settings, sampler, max_examples=len(N.dataset_of(settings).y_train)),
        model,
        ArrayRecord(model.state_dict()),
        lambda arrays: model.load_state_dict(arrays.to_torch_state_dict()),
    )  # fmt: skip


METHOD = Method(
    name=NAME,
    label="FedAvg (dense floats)",
    client_step=client_step,
    server=server,
    num_params=lambda settings: count_params(N.dense_model(settings)),
    marker="-s",
    description="dense float32 weights both ways (McMahan et al. 2017), Flower's FedAvg",
    attack=f"its update negated and scaled by {faults.ATTACK_SCALE:g}",
    options=(*DENSE_OPTIONS, ROBUST),
    order=20,
    grid=({"dense-lr": 0.02}, {"dense-lr": 0.05}, {"dense-lr": 0.1}),
)
