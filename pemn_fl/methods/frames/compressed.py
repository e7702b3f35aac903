"""Compressed dense updates in both directions: the shared frame of signSGD, QSGD and top-k.

The classic compressors train the same dense model as FedAvg and differ only in how an
update is squeezed. Here *both* directions are compressed and every byte is real:

* every party holds the dense weights ``W`` (``W_0`` from the seed, as FedAvg's initial
  model), replicated with ``replica``: the downlink to a node is the coded *global
  steps* of the rounds it missed (or a float32 snapshot past the history), so no dense
  float model ever travels after round 0;
* a client catches up, trains exactly as a FedAvg client (SGD, ``--dense-lr``), and sends
  its update ``delta = W_local - W`` through the method's ``encode_up``;
* the server decodes the valid replies (in partition order), lets the method turn them into
  one coded global step (``aggregate``: a majority vote, a re-quantised mean, a top-k with
  error feedback, ...) and everyone applies ``W += decode_down(step)`` in float32.

A method module (``methods/signsgd.py``, ...) supplies an ``UpdateCodec``; this module is
the strategy and client step around it, so the methods stay one small module each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_steps, encode_steps
from pemn_fl.methods.base import (
    ClientStep,
    Method,
    ServerSide,
    num_examples_of,
    partition_of,
)
from pemn_fl.methods.frames import replica as R
from pemn_fl.methods.frames.dense import DENSE_LR, DENSE_OPTIONS, DenseNet, Weights, dense_net, load
from pemn_fl.methods.frames.replicated import Parsed, ReplicatedStrategy, Update
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import train

log = logging.getLogger("pemn_fl.server")

Fields = dict[str, Any]  # ConfigRecord values of one coded update (bytes are payload)
CONFIG, UPDATE = M.CONFIG, M.UPDATE


@dataclass(frozen=True)
class UpdateCodec:
    """What one compressor decides; every function is pure given its explicit state.

    * ``encode_up(settings, net, delta, residual, tag) -> (fields, residual)``: a client's
      update on the wire; ``residual`` is the client's error-feedback memory (``None`` if the
      method keeps none), stored in the node's ``Context.state`` between rounds.
    * ``decode_up(settings, net, fields, tag) -> delta``: the server's view of it.
    * ``aggregate(settings, net, deltas, weights, state, tag) -> fields``: one coded global
      step from the decoded updates (``state`` is server-only memory, e.g. a residual).
    * ``decode_down(settings, net, fields, tag) -> step``: the step every party adds to ``W``.
    * ``up_fields`` / ``down_fields``: the ConfigRecord keys each direction uses.
    * ``step_size(settings)``: for a method whose global step is always that size times a
      signed integer per weight, coded by ``levels_codec.encode_steps`` in ``update``
      (signSGD); its rounds add up, so ``--merged-catch-up`` may make the replicated state
      the integer sums and send a node the rounds it missed as one. ``None``: they do not.
    """

    encode_up: Callable[[RunSettings, DenseNet, Weights, Weights | None, int],
                        tuple[Fields, Weights | None]]  # fmt: skip
    decode_up: Callable[[RunSettings, DenseNet, Mapping[str, Any], int], Weights]
    aggregate: Callable[[RunSettings, DenseNet, list[Weights], list[float], dict, int], Fields]
    decode_down: Callable[[RunSettings, DenseNet, Mapping[str, Any], int], Weights]
    up_fields: tuple[str, ...]
    down_fields: tuple[str, ...]
    step_size: Callable[[RunSettings], float] | None = None


def integer_state(settings: RunSettings, codec: UpdateCodec) -> bool:
    """Whether the replicated state is the summed integer steps ``S`` (``merged-catch-up``)."""
    return codec.step_size is not None and bool(settings[R.MERGED_CATCH_UP])


def state_of(settings: RunSettings, codec: UpdateCodec) -> Weights:
    """The replicated state at round 0 (fresh arrays): ``W_0``, or ``S_0 = 0``."""
    net = dense_net(settings)
    if integer_state(settings, codec):
        return [np.zeros_like(w) for w in net.initial]
    return [w.copy() for w in net.initial]


def weights_of(settings: RunSettings, codec: UpdateCodec, state: Weights) -> Weights:
    """The weights a state stands for: ``W`` itself, or ``W_0 + step_size * S``, computed
    afresh with the same float32 operations on every party."""
    if not integer_state(settings, codec):
        return state
    step = np.float32(codec.step_size(settings))  # type: ignore[misc]
    return [(w + s * step).astype(np.float32)
            for w, s in zip(dense_net(settings).initial, state, strict=True)]  # fmt: skip


def weighted_mean(deltas: list[Weights], weights: list[float]) -> Weights:
    """Example-weighted mean update, float64 sums in the caller's (partition) order."""
    total = float(sum(weights))
    out = [np.zeros(d.size, dtype=np.float64) for d in deltas[0]]
    for w, delta in zip(weights, deltas, strict=True):
        for acc, d in zip(out, delta, strict=True):
            acc += w * d
    return [(acc / total).astype(np.float32) for acc in out]


def _apply(settings: RunSettings, codec: UpdateCodec) -> R.Apply:
    net = dense_net(settings)
    if integer_state(settings, codec):

        def add_steps(state: Weights, t: int, fields: Mapping[str, Any]) -> Weights:
            steps = decode_steps(bytes(fields["update"]), fingerprint=net.fingerprint, tag=t,
                                 layer_sizes=net.sizes)  # fmt: skip
            return [(x + st).astype(np.float32) for x, st in zip(state, steps, strict=True)]

        return add_steps

    def apply(weights: Weights, t: int, fields: Mapping[str, Any]) -> Weights:
        step = codec.decode_down(settings, net, fields, t)
        return [(w + s).astype(np.float32) for w, s in zip(weights, step, strict=True)]

    return apply


# -- client ------------------------------------------------------------------------------
def client_step_for(name: str, codec: UpdateCodec) -> ClientStep:
    def step(msg: Message, context: Context, settings: RunSettings) -> Message:
        pid, n = partition_of(context)
        net = dense_net(settings)
        state, held = R.load(context, name, lambda: state_of(settings, codec))
        try:
            state, held = R.catch_up(
                msg.content[CONFIG], msg.content.array_records.get(R.SNAPSHOT), state, held,
                net.sizes, _apply(settings, codec), codec.down_fields,
            )  # fmt: skip
        except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"partition {pid} rejected the downlink: {exc}") from None
        R.store(context, name, state, held)
        weights = weights_of(settings, codec, state)
        server_round = held + 1
        model = N.dense_model(settings)
        load(model, net, weights)
        x, y = N.client_data(settings, pid, n)
        lr = settings.scheduled(settings[DENSE_LR], server_round)
        loss = train(model, x, y, settings.train_config(lr),
                     seed=derived_seed(settings.seed, f"batches/{pid}/{server_round}"))  # fmt: skip
        local = model.state_dict()
        delta = [
            (local[k].detach().numpy().reshape(-1).astype(np.float32) - w)
            for k, w in zip(net.names, weights, strict=True)
        ]
        key = f"{name}-residual"
        residual = context.state[key].to_numpy_ndarrays() if key in context.state else None
        fields, residual = codec.encode_up(settings, net, delta, residual, server_round)
        if residual is not None:
            context.state[key] = ArrayRecord(residual)
        return M.reply(msg, fields, num_examples=len(y), train_loss=loss,
                       compact=settings.compact_replies)  # fmt: skip

    return step


# -- server ------------------------------------------------------------------------------
Reply = Parsed[Weights]  # a reply's update, num-examples, train loss


class CompressedUpdates(ReplicatedStrategy[Weights]):
    """Server of a compressed-update method: coded steps down, coded updates up."""

    def __init__(self, *, settings: RunSettings, sampler: RoundSampler, codec: UpdateCodec,
                 message_type: str) -> None:  # fmt: skip
        self.net = dense_net(settings)
        super().__init__(settings=settings, sampler=sampler, message_type=message_type,
                         initial=state_of(settings, codec), fields=codec.down_fields)  # fmt: skip
        self.codec = codec
        self.state: dict = {}  # the method's server-only memory
        self.data = N.dataset_of(settings)  # bounds a reply's num-examples

    def check(self, server_round: int) -> Callable[[Message], Reply]:
        def check(reply: Message) -> Reply:
            metrics = M.metrics_of(reply)
            num_examples = num_examples_of(metrics, len(self.data.y_train))
            delta = self.codec.decode_up(self.settings, self.net, reply.content[UPDATE],
                                         server_round)  # fmt: skip
            if not all(np.isfinite(d).all() for d in delta):
                raise MaskPayloadError("update holds non-finite values")
            return delta, num_examples, float(metrics.get("train-loss", float("nan")))

        return check

    def update(self, server_round: int, deltas: list[Weights], weights: list[float]) -> Update:
        fields = self.codec.aggregate(self.settings, self.net, deltas, weights, self.state,
                                      server_round)  # fmt: skip
        return fields, _apply(self.settings, self.codec)(self.replica.state, server_round, fields)

    def global_arrays(self) -> ArrayRecord:
        weights = weights_of(self.settings, self.codec, self.replica.state)
        return ArrayRecord([a.copy() for a in weights])

    def merger(self) -> R.Merge | None:
        return self.merge if integer_state(self.settings, self.codec) else None

    def merge(self, first: int, made: list[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
        """Rounds' integer steps summed into one ``update``, tagged with ``first``."""
        total = [np.zeros(n, dtype=np.int64) for n in self.net.sizes]
        for t, fields in made:
            steps = decode_steps(bytes(fields["update"]), fingerprint=self.net.fingerprint,
                                 tag=t, layer_sizes=self.net.sizes)  # fmt: skip
            for acc, st in zip(total, steps, strict=True):
                acc += st
        return {"update": encode_steps(total, fingerprint=self.net.fingerprint, tag=first)}

    def summary(self) -> None:
        log.info("%s: dense-lr=%s", type(self).__name__, self.settings[DENSE_LR])


def method(name: str, codec: UpdateCodec, *, label: str, marker: str, description: str,
           options: tuple[Option, ...] = (), **entry: Any) -> Method:  # fmt: skip
    """The registry entry of a compressed-update method (``entry``: the rest of its
    ``Method``, e.g. its display order and tuning grid)."""

    def server(settings: RunSettings, sampler: RoundSampler) -> ServerSide:
        model = N.dense_model(settings)
        strategy = CompressedUpdates(settings=settings, sampler=sampler, codec=codec,
                                     message_type=f"train.{name}")  # fmt: skip
        net = strategy.net
        return ServerSide(
            strategy, model, ArrayRecord([w.copy() for w in net.initial]),
            lambda arrays: load(model, net, arrays.to_numpy_ndarrays()),
        )  # fmt: skip

    return Method(
        name=name, label=label, client_step=client_step_for(name, codec), server=server,
        num_params=lambda settings: sum(dense_net(settings).sizes), marker=marker,
        description=description, options=(*DENSE_OPTIONS, *options), **entry,
    )  # fmt: skip
