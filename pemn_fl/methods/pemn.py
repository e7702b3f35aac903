"""PEMN-FL over a frozen prototype: bit-packed masks down and up, score voting in between.

Client step: decode the global mask (a delta against the version the node holds, or
packed), start edge-popup scores whose top-k is exactly that mask (``frames/frozen``), train,
reply with the new mask as a delta against the global it received.

Server (``MaskVoting``): the global model is the mask, kept as an ``ArrayRecord`` of
per-layer uint8 arrays on the server (handy for evaluation); what travels is only the codec
payload. Downlink: the server remembers which mask version each node last acknowledged (a
reply proves receipt) and sends a delta against it when that is smaller than the packed
mask. Every node implicitly holds version 0 (derived from the seed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pemn_fl import faults
from pemn_fl import networks as N
from pemn_fl.checkpoint import translate_keys
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.config import RunSettings
from pemn_fl.methods import messages as M
from pemn_fl.methods.base import (
    Method,
    ServerEvaluation,
    ServerSide,
    node_label,
    num_examples_of,
    partition_of,
    trim_votes,
)
from pemn_fl.methods.frames import frozen
from pemn_fl.methods.frames.voting import global_mask, tally, update_state
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")

HISTORY = 8  # mask versions kept for downlink deltas (a few KB each)
NAME = "pemn"


def mask_to_record(mask: frozen.Mask) -> ArrayRecord:
    return ArrayRecord([m.astype(np.uint8) for m in mask])


def record_to_mask(record: ArrayRecord) -> frozen.Mask:
    return [a.astype(bool) for a in record.to_numpy_ndarrays()]


# -- client ------------------------------------------------------------------------------
def state_keys(name: str) -> tuple[str, str, str]:
    """Context.state keys of a node's held global mask, its version, and its own scores.

    Prefixed by the method name so two mask methods in one run never read each other's
    state (``pemn`` keeps the keys it always had).
    """
    return f"{name}-global", f"{name}-global-id", f"{name}-scores"


def _held_masks(
    context: Context, name: str
) -> tuple[dict[int, frozen.Mask], list[np.ndarray] | None]:
    """The global mask this node last received (by version) and its own scores, if kept."""
    key_global, key_id, key_scores = state_keys(name)
    held: dict[int, frozen.Mask] = {}
    if key_global in context.state:
        version = int(context.state[key_id]["id"])
        held[version] = record_to_mask(context.state[key_global])
    scores = None
    if key_scores in context.state:
        scores = context.state[key_scores].to_numpy_ndarrays()
    return held, scores


def client_step(
    msg: Message, context: Context, settings: RunSettings, name: str = NAME
) -> Message:
    cfg = msg.content[M.CONFIG]
    pid, n = partition_of(context)
    key_global, key_id, key_scores = state_keys(name)
    held, prev_scores = _held_masks(context, name)
    mask_id, server_round = int(cfg[frozen.MASK_ID]), int(cfg[M.ROUND])
    try:
        result = frozen.client_round(
            settings, pid, n, bytes(cfg[frozen.MASK]), held, mask_id, prev_scores, server_round,
            invert=faults.is_byzantine(settings, pid, n),
        )
    except MaskPayloadError as exc:
        # Surfaces to the server as an error reply with this reason; the node keeps its state.
        raise RuntimeError(f"partition {pid} rejected the downlink mask: {exc}") from None
    context.state[key_global] = mask_to_record(result.received)
    context.state[key_id] = ConfigRecord({"id": mask_id})
    if settings[frozen.CLIENT_INIT] == "stateful":
        context.state[key_scores] = ArrayRecord(result.scores)
    return M.reply(msg, {frozen.MASK: result.payload}, num_examples=result.num_examples,
                   train_loss=result.train_loss, compact=settings.compact_replies)  # fmt: skip


# -- server ------------------------------------------------------------------------------
class MaskVoting(ServerEvaluation, Strategy):
    """PEMN-FL: bit-packed masks down and up, weighted score voting in between."""

    def __init__(
        self,
        *,
        sampler: Callable[[int], list[int]],
        fingerprint: str,
        layer_sizes: tuple[int, ...],
        initial_mask: frozen.Mask,
        keep: float,
        seed: int,
        momentum: float = 0.0,
        weighting: str = "examples",
        message_type: str = f"train.{NAME}",
        max_examples: int = 2**31 - 1,
        trim: float = 0.0,
    ) -> None:
        self.sampler = sampler
        self.trim = trim  # --trim-votes: share of outlying votes left out each round
        self.fingerprint = fingerprint
        self.layer_sizes = layer_sizes
        self.keep, self.seed, self.momentum, self.weighting = keep, seed, momentum, weighting
        self.message_type = message_type
        self.max_examples = max_examples  # bound on a reply's num-examples (the train set)
        self.version = 0
        self.history: dict[int, frozen.Mask] = {0: [m.copy() for m in initial_mask]}
        self.holds: dict[int, int] = {}  # node id -> mask version it holds
        self.state: list[np.ndarray] | None = None
        self.rejected = 0  # replies rejected in the last round (error or bad payload)

    def remap_nodes(self, new_node_of_old: dict[int, int]) -> None:
        """A resumed run's nodes have new ids (``pemn_fl.checkpoint``): translate ``holds``."""
        self.holds = translate_keys(self.holds, new_node_of_old)

    @property
    def current(self) -> frozen.Mask:
        return self.history[self.version]

    # -- training ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        payloads: dict[int | None, bytes] = {}  # one encoding per reference version
        messages = []
        for node in self.sampler(server_round):
            ref = self.holds.get(node, 0)
            ref = ref if ref in self.history else None
            if ref not in payloads:
                payloads[ref] = encode_mask(
                    self.current,
                    fingerprint=self.fingerprint,
                    reference=None if ref is None else self.history[ref],
                    reference_id=ref,
                )
            content = RecordDict(
                {
                    M.CONFIG: ConfigRecord(
                        {
                            M.ROUND: server_round,
                            frozen.MASK_ID: self.version,
                            frozen.MASK: payloads[ref],
                        }
                    )
                }
            )
            messages.append(
                Message(content=content, dst_node_id=node, message_type=self.message_type)
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        masks, weights, losses = [], [], []
        self.rejected = 0
        replies = list(replies)
        answered = {reply.metadata.src_node_id for reply in replies}
        for node in set(self.sampler(server_round)) - answered:
            # No reply by the deadline (a straggler, a dead node): it may hold the mask it was
            # just sent, or not; as for a failed reply, send it the packed mask next time.
            self.holds.pop(node, None)
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.rejected += 1
                # The node may hold the mask it was just sent, or not: until a reply proves
                # which, send it the packed mask (a delta against a version it lacks would
                # fail every round until that version left the history).
                self.holds.pop(node, None)
                log.warning("round %s: %s failed: %s", server_round,
                            node_label(self.sampler, node), reply.error.reason)  # fmt: skip
                continue
            try:
                update = reply.content[M.UPDATE][frozen.MASK]
                metrics = M.metrics_of(reply)
                num_examples = num_examples_of(metrics, self.max_examples)
                if not isinstance(update, bytes):
                    raise MaskPayloadError("reply lacks a mask payload")
                mask = decode_mask(
                    update,
                    fingerprint=self.fingerprint,
                    layer_sizes=self.layer_sizes,
                    references={self.version: self.current},
                )
            except (MaskPayloadError, KeyError, TypeError, ValueError) as exc:
                self.rejected += 1
                self.holds.pop(node, None)  # as above: what it holds is unknown
                log.warning("round %s: rejected reply of %s: %s", server_round,
                            node_label(self.sampler, node), exc)  # fmt: skip
                continue
            self.holds[node] = self.version
            masks.append(mask)
            weights.append(num_examples if self.weighting == "examples" else 1.0)
            losses.append(float(metrics.get("train-loss", float("nan"))))
        votes, trimmed = trim_votes(list(zip(masks, weights, losses, strict=True)), masks,
                                    self.trim, server_round)  # fmt: skip
        self.rejected += trimmed
        masks, weights, losses = ([v[i] for v in votes] for i in range(3))
        if not masks or sum(weights) <= 0:
            log.warning("round %s: no valid mask update; global mask unchanged", server_round)
            return None, None
        self.state = update_state(self.state, tally(masks, weights), self.momentum)
        previous = self.current
        new = global_mask(self.state, previous, self.keep, self.seed, server_round)
        self.version += 1
        self.history[self.version] = new
        self.history.pop(self.version - HISTORY, None)
        w = np.asarray(weights) / sum(weights)
        flips = sum(int((a != b).sum()) for a, b in zip(new, previous, strict=True))
        metrics = MetricRecord({"train-loss": float(np.dot(w, losses)), "global-flips": flips})
        return mask_to_record(new), metrics

    def summary(self) -> None:
        log.info(
            "MaskVoting: keep=%s momentum=%s weighting=%s fingerprint=%s",
            self.keep, self.momentum, self.weighting, self.fingerprint,
        )  # fmt: skip


def server(settings: RunSettings, sampler: RoundSampler, name: str = NAME) -> ServerSide:
    model, proto = N.masked_model(settings)
    strategy = MaskVoting(
        sampler=sampler, fingerprint=proto.fingerprint, layer_sizes=proto.layer_sizes,
        initial_mask=frozen.initial_mask(settings), keep=settings[N.KEEP], seed=settings.seed,
        momentum=settings[frozen.SERVER_MOMENTUM], weighting=settings.vote_weighting,
        message_type=f"train.{name}", max_examples=len(N.dataset_of(settings).y_train),
        trim=settings.trim_votes,
    )  # fmt: skip
    return ServerSide(
        strategy, model, mask_to_record(strategy.current),
        lambda arrays: frozen.load_mask(model, record_to_mask(arrays)),
    )  # fmt: skip


def num_params(settings: RunSettings) -> int:
    """Masked edges: one mask bit each."""
    return sum(N.masked_model(settings)[1].layer_sizes)


METHOD = Method(
    name=NAME,
    label="PEMN-FL (masks)",
    client_step=client_step,
    server=server,
    num_params=num_params,
    marker="-o",
    description="frozen seeded prototype; clients learn top-k masks; server score voting",
    attack="the complement of its trained mask",
    options=frozen.MASK_OPTIONS,
)
