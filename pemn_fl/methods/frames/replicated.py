"""The base of every strategy whose model is replicated state: one skeleton, written once.

The evolving prototypes (``evolve*``), the compressed dense updates (``signsgd``, ``qsgd``,
``topk``) and FedPM's carried posterior (``fedpm_bayes``) all keep the model as state every
party holds bit for bit (``methods/frames/replica.py``) and differ only in what one round's
update is.
This is what they share, so a round goes the same way for each:

1. ``configure_train``: each sampled node gets the updates it missed (or a snapshot);
2. ``aggregate_train``: the replies are screened (``methods.base.screen``: error replies and
   bad payloads logged and counted in ``rejected``, never used), a method may leave valid
   ones out (``admit``: a trimmed vote, a cap), then either the method's ``update`` gives the
   round's coded fields and the new state, which the replica commits, or there is nothing to
   aggregate and the round is logged as empty (``ReplicaServer.skip``), so no node ever waits
   for an update that was never made.

A subclass supplies ``check`` (parse one reply into ``(update, examples, loss)``),
``update`` (the round's fields and new state from the updates and their weights) and
``global_arrays`` (what the server evaluates), and optionally ``admit`` and ``merger`` (one
update for the rounds a node missed, where a method's rounds add up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from pemn_fl.config import RunSettings
from pemn_fl.methods.base import ServerEvaluation, screen
from pemn_fl.methods.frames import replica as R
from pemn_fl.sampling import RoundSampler

log = logging.getLogger("pemn_fl.server")
U = TypeVar("U")  # one reply's update, as ``check`` parses it
Parsed = tuple[U, float, float]  # a reply: its update, its examples, its training loss
Update = tuple[Mapping[str, Any], R.State]  # the round's coded fields and the new state


class ReplicatedStrategy(ServerEvaluation, Strategy, Generic[U]):
    """A Flower ``Strategy`` over a ``ReplicaServer``; see the module docstring."""

    def __init__(self, *, settings: RunSettings, sampler: RoundSampler, message_type: str,
                 initial: R.State, fields: tuple[str, ...]) -> None:  # fmt: skip
        self.settings, self.sampler, self.message_type = settings, sampler, message_type
        self.replica = R.ReplicaServer(initial, fields)
        self.rejected = 0  # replies refused in the last round (the round log reads it)

    # -- what a method supplies ------------------------------------------------------------
    def check(self, server_round: int) -> Callable[[Message], Parsed[U]]:
        """The parser of one reply of ``server_round``; it raises a payload error to refuse."""
        raise NotImplementedError

    def admit(self, server_round: int, kept: list[tuple[int, Parsed[U]]]
              ) -> list[tuple[int, Parsed[U]]]:  # fmt: skip
        """The valid replies that take part (all, by default); one left out adds to
        ``rejected``."""
        return kept

    def update(self, server_round: int, updates: list[U], weights: list[float]) -> Update:
        """The round's coded fields and the new state, from the taking part replies'
        updates (in partition order) and their weights."""
        raise NotImplementedError

    def global_arrays(self) -> ArrayRecord:
        """The model the server evaluates, from the replica's current state."""
        raise NotImplementedError

    def merger(self) -> R.Merge | None:
        """How to merge the rounds a node missed into one update (``replica.Merge``), or
        ``None``: each round travels on its own (the default; most updates do not add up)."""
        return None

    def weighted(self, kept: list[tuple[int, Parsed[U]]]
                 ) -> tuple[list[U], list[float], MetricRecord] | None:  # fmt: skip
        """The kept replies' updates, their weights (``--vote-weighting``: examples, or one
        each) and the weighted mean training loss; ``None`` when the weights sum to nothing
        (no reply can be averaged)."""
        weights = [n if self.settings.vote_weighting == "examples" else 1.0
                   for _, (_, n, _) in kept]  # fmt: skip
        if not kept or sum(weights) <= 0:
            return None
        share = np.asarray(weights) / sum(weights)
        loss = float(np.dot(share, [loss for _, (_, _, loss) in kept]))
        return [u for _, (u, _, _) in kept], weights, MetricRecord({"train-loss": loss})

    # -- the shared round --------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.replica.messages(self.sampler(server_round), server_round, self.message_type,
                                     self.merger())  # fmt: skip

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept, self.rejected = screen(replies, self.sampler, server_round,
                                     self.check(server_round))  # fmt: skip
        admitted = self.admit(server_round, kept)
        self.rejected += len(kept) - len(admitted)
        split = self.weighted(admitted)
        if split is None:
            log.warning("round %s: no valid update; the model is unchanged", server_round)
            self.replica.skip(server_round)  # nodes step over this round
            return None, None
        updates, weights, metrics = split
        fields, state = self.update(server_round, updates, weights)
        self.replica.commit(server_round, fields, state, [node for node, _ in admitted])
        return self.global_arrays(), metrics
