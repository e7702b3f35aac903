"""The frozen-prototype round's server side (pemn, pemn_wide): ``MaskVoting``.

The global model is the mask, kept as an ``ArrayRecord`` of per-layer uint8 arrays on the
server (handy for evaluation); what travels is only the codec payload. Downlink: the server
remembers which mask version each node last acknowledged (a reply proves receipt) and sends a
delta against it when that is smaller than the packed mask. Every node implicitly holds
version 0 (derived from the seed). The votes are tallied by ``voting``.

``method`` makes a frozen-prototype method's registry entry: ``pemn`` on the run's width,
``pemn_wide`` on a wider model, each with its own state keys and message type.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pemn_fl import messages as M
from pemn_fl import networks as N
from pemn_fl.checkpoint import translate_keys
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.config import RunSettings
from pemn_fl.methods.base import Method, ServerEvaluation, ServerSide, node_label, num_examples_of
from pemn_fl.methods.frames import frozen
from pemn_fl.methods.frames.voting import global_mask, tally, trim_votes, update_state
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")

HISTORY = 8  # mask versions kept for downlink deltas (a few KB each)
ATTACK = "the complement of its trained mask"


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
        message_type: str = "train.pemn",
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
        self.rejected = 0
        masks, weights, losses = self._votes(server_round, list(replies))
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
        return frozen.mask_to_record(new), metrics

    def _votes(self, server_round: int, replies: list[Message]
               ) -> tuple[list[frozen.Mask], list[float], list[float]]:  # fmt: skip
        """Each valid reply's mask, weight and loss, in arrival order; a failed or refused
        reply is counted in ``rejected``, and what its node holds is forgotten."""
        masks, weights, losses = [], [], []
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
        return masks, weights, losses

    def summary(self) -> None:
        log.info(
            "MaskVoting: keep=%s momentum=%s weighting=%s fingerprint=%s",
            self.keep, self.momentum, self.weighting, self.fingerprint,
        )  # fmt: skip


def server(settings: RunSettings, sampler: RoundSampler, name: str) -> ServerSide:
    """Method ``name``'s server side over the masked model of ``settings``."""
    model, proto = N.masked_model(settings)
    strategy = MaskVoting(
        sampler=sampler, fingerprint=proto.fingerprint, layer_sizes=proto.layer_sizes,
        initial_mask=frozen.initial_mask(settings), keep=settings[N.KEEP], seed=settings.seed,
        momentum=settings[frozen.SERVER_MOMENTUM], weighting=settings.vote_weighting,
        message_type=f"train.{name}", max_examples=len(N.dataset_of(settings).y_train),
        trim=settings.trim_votes,
    )  # fmt: skip
    return ServerSide(
        strategy, model, frozen.mask_to_record(strategy.current),
        lambda arrays: frozen.load_mask(model, frozen.record_to_mask(arrays)),
    )  # fmt: skip


def num_params(settings: RunSettings) -> int:
    """Masked edges: one mask bit each."""
    return sum(N.masked_model(settings)[1].layer_sizes)


def method(name: str, *, widen: float = 1.0, **entry: Any) -> Method:
    """The registry entry of a frozen-prototype method: the masked model ``widen`` times
    wider than ``--width`` (``entry``: label, marker, description, order, grid)."""

    def widened(settings: RunSettings) -> RunSettings:
        if widen == 1.0:
            return settings
        return dataclasses.replace(settings, width=settings.width * widen)

    return Method(
        name=name,
        client_step=lambda msg, ctx, s: frozen.client_step(msg, ctx, widened(s), name),
        server=lambda s, sampler: server(widened(s), sampler, name),
        num_params=lambda s: num_params(widened(s)),
        attack=ATTACK, options=frozen.MASK_OPTIONS, **entry,
    )  # fmt: skip
