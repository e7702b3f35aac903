"""The frozen-prototype round's client side (pemn, pemn_wide): a client decodes the global
mask, starts its edge scores from it, trains them over the seed's fixed random weights and
sends its mask back as a delta (decode -> init scores -> train -> encode); ``client_step`` is
that round as a node's handler, its state kept under the method's own keys. The server is
``mask_voting`` (its tally ``voting``); the networks every method builds are
``pemn_fl/networks.py``.

Message layout (record names from ``pemn_fl/messages.py``):

* downlink ``train.pemn``: ``ConfigRecord "config"`` = {``server-round``, ``mask-id``,
  ``mask`` (codec payload: delta against the mask the node holds, or packed)}.
* uplink reply: ``ConfigRecord "update"`` = {``mask`` (codec payload, delta against the
  global it received)}, ``MetricRecord "metrics"`` = {``num-examples``, ``train-loss``}.

Version 0 of the global mask is derived from the seed by every party, so nothing has to be
sent to establish it; after that, version ``v`` is the mask the server produced in round ``v``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn

from pemn_fl import faults
from pemn_fl import messages as M
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.config import RunSettings
from pemn_fl.masked import get_masks, masked_layers
from pemn_fl.methods.base import partition_of
from pemn_fl.networks import KEEP, client_data, masked_model
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.scores import realign, scores_from_mask
from pemn_fl.task import train

MASK, MASK_ID = "mask", "mask-id"


# -- the frozen-prototype (mask) family's options: pemn, pemn_wide ------------------------
LR = Option("lr", 1.0, "score learning rate of the masked model (tuned for the digits "
            "classroom default)", low=0, low_open=True)  # fmt: skip
CLIENT_INIT = Option("client-init", "stateful", "a client's scores: stateful (its own, carried "
                     "across rounds) or stateless (from the global mask each round)",
                     choices=("stateless", "stateful"))  # fmt: skip
MARGIN = Option("margin", 0.0, "score margin around the keep threshold when a client starts "
                "from the global mask", low=0, high=1e3)  # fmt: skip
SERVER_MOMENTUM = Option("server-momentum", 0.0, "momentum of the server's vote tally",
                         low=0, high=1, high_open=True)  # fmt: skip
MASK_OPTIONS = (LR, KEEP, CLIENT_INIT, MARGIN, SERVER_MOMENTUM)

Mask = list[np.ndarray]


@functools.lru_cache(maxsize=8)
def initial_mask(settings: RunSettings) -> Mask:
    """Global mask version 0: a seeded random top-k every party derives without any traffic.

    Cached per process and returned read-only, since every round of every client needs it.
    """
    model, _ = masked_model(settings)
    gen = torch.Generator().manual_seed(derived_seed(settings.seed, "initial-mask"))
    for _, layer in masked_layers(model):
        layer.set_scores(torch.rand(layer.scores.shape, generator=gen))
    masks = masks_of(model)
    for m in masks:
        m.setflags(write=False)
    return masks


def masks_of(model: nn.Module) -> Mask:
    return [m.flatten().numpy().copy() for m in get_masks(model)]


def load_mask(model: nn.Module, mask: Mask) -> None:
    """Make ``model`` compute exactly with ``mask`` (scores = the mask itself)."""
    for (_, layer), bits in zip(masked_layers(model), mask, strict=True):
        layer.set_scores(torch.from_numpy(bits.astype(np.float32)).view_as(layer.scores))


def init_scores(
    model: nn.Module, global_mask: Mask, previous_scores: list[np.ndarray] | None,
    settings: RunSettings, tag: str,
) -> None:  # fmt: skip
    """Start local training from ``global_mask``: stateless or stateful (see ``scores``)."""
    gen = torch.Generator().manual_seed(derived_seed(settings.seed, tag))
    layers = masked_layers(model)
    for i, (_, layer) in enumerate(layers):
        g = torch.from_numpy(global_mask[i]).view_as(layer.scores)
        if settings[CLIENT_INIT] == "stateful" and previous_scores is not None:
            prev = torch.from_numpy(previous_scores[i]).view_as(layer.scores)
            scores = realign(prev, g, eps=max(settings[MARGIN], 1e-3))
        else:
            scores = scores_from_mask(g, settings[MARGIN], gen)
        layer.set_scores(scores)


@dataclass
class ClientRoundResult:
    payload: bytes
    num_examples: int
    train_loss: float
    scores: list[np.ndarray]
    received: Mask


def client_round(
    settings: RunSettings,
    partition_id: int,
    num_partitions: int,
    payload: bytes,
    held: dict[int, Mask],
    mask_id: int,
    previous_scores: list[np.ndarray] | None,
    server_round: int,
    invert: bool = False,
) -> ClientRoundResult:
    """One PEMN-FL client round. Raises ``MaskPayloadError`` for a bad downlink payload.

    ``invert``: a Byzantine client (``--byzantine``) sends the complement of its trained mask,
    a well-formed payload that votes against every edge it found useful."""
    model, proto = masked_model(settings)
    references = {0: initial_mask(settings), **held}
    received = decode_mask(
        payload, fingerprint=proto.fingerprint, layer_sizes=proto.layer_sizes,
        references=references,
    )  # fmt: skip
    init_scores(model, received, previous_scores, settings, f"client/{partition_id}/{server_round}")
    x, y = client_data(settings, partition_id, num_partitions)
    loss = train(
        model, x, y, settings.train_config(settings.scheduled(settings[LR], server_round)),
        seed=derived_seed(settings.seed, f"batches/{partition_id}/{server_round}"),
    )  # fmt: skip
    sent = [np.logical_not(m) for m in masks_of(model)] if invert else masks_of(model)
    update = encode_mask(
        sent, fingerprint=proto.fingerprint, reference=received, reference_id=mask_id
    )
    scores = [layer.scores.detach().flatten().numpy().copy() for _, layer in masked_layers(model)]
    return ClientRoundResult(update, len(y), loss, scores, received)


# -- a node's round, as a method's client step ----------------------------------------------
def mask_to_record(mask: Mask) -> ArrayRecord:
    return ArrayRecord([m.astype(np.uint8) for m in mask])


def record_to_mask(record: ArrayRecord) -> Mask:
    return [a.astype(bool) for a in record.to_numpy_ndarrays()]


def state_keys(name: str) -> tuple[str, str, str]:
    """Context.state keys of a node's held global mask, its version, and its own scores.

    Prefixed by the method name so two mask methods in one run never read each other's
    state (``pemn`` keeps the keys it always had).
    """
    return f"{name}-global", f"{name}-global-id", f"{name}-scores"


def _held_masks(
    context: Context, name: str
) -> tuple[dict[int, Mask], list[np.ndarray] | None]:
    """The global mask this node last received (by version) and its own scores, if kept."""
    key_global, key_id, key_scores = state_keys(name)
    held: dict[int, Mask] = {}
    if key_global in context.state:
        version = int(context.state[key_id]["id"])
        held[version] = record_to_mask(context.state[key_global])
    scores = None
    if key_scores in context.state:
        scores = context.state[key_scores].to_numpy_ndarrays()
    return held, scores


def client_step(msg: Message, context: Context, settings: RunSettings, name: str) -> Message:
    """A node's frozen-prototype round for method ``name`` (its state under its own keys)."""
    cfg = msg.content[M.CONFIG]
    pid, n = partition_of(context)
    key_global, key_id, key_scores = state_keys(name)
    held, prev_scores = _held_masks(context, name)
    mask_id, server_round = int(cfg[MASK_ID]), int(cfg[M.ROUND])
    try:
        result = client_round(
            settings, pid, n, bytes(cfg[MASK]), held, mask_id, prev_scores, server_round,
            invert=faults.is_byzantine(settings, pid, n),
        )
    except MaskPayloadError as exc:
        # Surfaces to the server as an error reply with this reason; the node keeps its state.
        raise RuntimeError(f"partition {pid} rejected the downlink mask: {exc}") from None
    context.state[key_global] = mask_to_record(result.received)
    context.state[key_id] = ConfigRecord({"id": mask_id})
    if settings[CLIENT_INIT] == "stateful":
        context.state[key_scores] = ArrayRecord(result.scores)
    return M.reply(msg, {MASK: result.payload}, num_examples=result.num_examples,
                   train_loss=result.train_loss, compact=settings.compact_replies)  # fmt: skip
