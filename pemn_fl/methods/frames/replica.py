"""Replicated state: every party holds the same arrays, and only each round's update travels.

Methods whose model is "the seed plus every round's update" (the evolving prototype, the
carried FedPM posterior, and dense methods that broadcast a compressed global step) share
one problem: a node sampled in round ``r`` must hold exactly the server's state of round
``r - 1``, though it may have missed any number of rounds. This module is that machinery,
and nothing else:

* the server (``ReplicaServer``) applies each round's update to its own copy, logs the
  round's wire fields for ``history`` rounds, and remembers, per node, only the round
  whose state the node holds (a valid reply proves it);
* the downlink to a node is ``from-round`` ``a``, every missed round ``t``'s fields as
  ``<field>-t`` and an 8-byte ``digest`` of the state, or, for a node further behind than
  the log, a float32 ``snapshot`` of the state (counted like every byte);
* the node (``catch_up``) replays the missed rounds with the method's own ``apply`` and
  checks the digest, so a node can never silently train on other weights than the server's;
* a round with no valid reply changes nothing (``skip``): the server logs it as empty and a
  node that missed it is told so (``skipped``: the list of such rounds it must step over),
  so one lost round never leaves the nodes waiting for an update that will never exist;
* a method whose rounds add up (``merge``: fixed-size integer steps) may send a node that
  missed rounds *one* update for all of them, ``merged-<field>``: the sum of k sparse steps
  codes in far fewer bits than k steps. Only to a node whose state the server knows for sure
  (every downlink it got so far was answered by a valid reply): one whose reply was lost may
  have applied some of the rounds already, and gets them one by one (it steps over those).

Updates carry their round, so a reply lost after a catch-up never double-applies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from pemn_fl import messages as M
from pemn_fl.checkpoint import translate_keys
from pemn_fl.codec import MaskPayloadError
from pemn_fl.options import Option

State = list[np.ndarray]  # flat float32 arrays
# (state of round t - 1, round t, the fields of round t) -> state of round t
Apply = Callable[[State, int, Mapping[str, Any]], State]
HISTORY = 64  # rounds of updates the server keeps for catch-up (a few KB each)
SNAPSHOT = "snapshot"
SKIPPED = "skipped"  # downlink key: the missed rounds that had no update (sent only if any)
MERGED = "merged-"  # downlink key prefix: one update for every missed round (``merge``)
# (the first round missed, the logged fields of the missed rounds that made an update, in
# order, as (round, fields)) -> the fields of one update with the same effect as applying
# them one after another; it travels as if it were the first round's (``apply`` gets that
# round: the node knows it, not which of the rounds were empty).
Merge = Callable[[int, list[tuple[int, Mapping[str, Any]]]], Mapping[str, Any]]


def _constant_schedule(value: object, settings: object) -> None:
    if value and settings.lr_schedule != "constant":  # type: ignore[attr-defined]
        raise ValueError("merged-catch-up sums the rounds' steps, so the step size must stay "
                         "the same: drop --lr-schedule cosine or --merged-catch-up")  # fmt: skip


# Declared by the methods whose every round's step is a fixed size times an integer per
# weight (evolve_lattice, signsgd): with it their state is the integer sums and they merge.
MERGED_CATCH_UP = Option(
    "merged-catch-up", False, "a node that missed rounds gets one update, their steps summed "
    "(fixed-step methods; the state becomes the integer sums, so runs differ in the last "
    "float bits)", check=_constant_schedule)  # fmt: skip


def digest(state: State) -> bytes:
    """8 bytes identifying the state exactly: sent with updates so a node can verify."""
    h = hashlib.sha256()
    for a in state:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.digest()[:8]


class ReplicaServer:
    """The server's copy of the state, its bounded update log and what each node holds."""

    def __init__(
        self, initial: State, fields: tuple[str, ...], history: int | None = None
    ) -> None:
        self.state: State = [a.copy() for a in initial]
        self.digest = digest(self.state)  # of self.state; sent to every node, hashed once
        self.fields = fields  # the wire fields of one round's update, e.g. ("update",)
        self.history = HISTORY if history is None else history
        self.round = 0  # the round whose state self.state is
        # round -> its fields (None: an empty round), the last ``history`` rounds
        self.updates: dict[int, dict[str, Any] | None] = {}
        self.holds: dict[int, int] = {}  # node id -> round whose state it holds
        self.sent: dict[int, int] = {}  # node id -> the round of the last downlink it got

    def remap_nodes(self, new_node_of_old: dict[int, int]) -> None:
        """A resumed run's nodes have new ids (``pemn_fl.checkpoint``): translate ``holds``
        and ``sent``."""
        self.holds = translate_keys(self.holds, new_node_of_old)
        self.sent = translate_keys(self.sent, new_node_of_old)

    def certain(self, node: int) -> bool:
        """Whether ``node`` holds exactly ``holds[node]``: every downlink it got was answered
        by a valid reply (one that was not may have been applied, in part or whole)."""
        return self.sent.get(node, 0) <= self.holds.get(node, 0) + 1

    def __setstate__(self, saved: dict[str, Any]) -> None:
        """A checkpoint written before ``sent`` existed: no downlink is known unanswered."""
        self.__dict__.update({"sent": {}, **saved})

    def downlink(self, node: int, server_round: int, merge: Merge | None = None
                 ) -> tuple[ConfigRecord, ArrayRecord | None]:  # fmt: skip
        """What ``node`` needs to hold round ``server_round - 1``: updates (with ``merge``,
        one merged update where it saves anything and is safe) or a snapshot."""
        held = self.holds.get(node, 0)
        missing = range(held + 1, self.round + 1)
        cfg = ConfigRecord(
            {M.ROUND: server_round, "from-round": held + 1, "digest": self.digest}
        )
        if all(t in self.updates for t in missing):
            skipped = [t for t in missing if self.updates[t] is None]
            made = [(t, self.updates[t]) for t in missing if self.updates[t] is not None]
            if merge is not None and len(made) >= 2 and self.certain(node):
                for field, value in merge(held + 1, made).items():  # type: ignore[arg-type]
                    cfg[f"{MERGED}{field}"] = value
                return cfg, None
            for t in missing:
                for field in self.fields if t not in skipped else ():
                    cfg[f"{field}-{t}"] = self.updates[t][field]  # type: ignore[index]
            if skipped:
                cfg[SKIPPED] = skipped
            return cfg, None
        cfg["from-round"] = server_round  # too far behind the log: a float snapshot
        return cfg, ArrayRecord([a.astype(np.float32) for a in self.state])

    def messages(self, nodes: list[int], server_round: int, message_type: str,
                 merge: Merge | None = None) -> list[Message]:  # fmt: skip
        """One training message per sampled node: ``ConfigRecord "config"`` (+ a snapshot)."""
        out = []
        for node in nodes:
            cfg, snapshot = self.downlink(node, server_round, merge)
            self.sent[node] = server_round
            content = RecordDict({"config": cfg})
            if snapshot is not None:
                content[SNAPSHOT] = snapshot
            out.append(Message(content=content, dst_node_id=node, message_type=message_type))
        return out

    def commit(self, server_round: int, fields: Mapping[str, Any], state: State,
               nodes: list[int]) -> None:  # fmt: skip
        """Round ``server_round``'s update is ``fields``, giving ``state``; ``nodes`` replied."""
        self.state = state
        self.digest = digest(state)
        self.round = server_round
        self.updates[server_round] = {f: fields[f] for f in self.fields}
        self.updates.pop(server_round - self.history, None)
        for node in nodes:  # a valid reply proves the node caught up to server_round - 1
            self.holds[node] = server_round - 1

    def skip(self, server_round: int) -> None:
        """Round ``server_round`` had no valid reply: the state stays as it is, and the round
        is logged as empty, so nodes that missed it step over it instead of waiting for an
        update that was never made. What each node holds is unchanged (nothing proved it)."""
        self.round = server_round
        self.updates[server_round] = None
        self.updates.pop(server_round - self.history, None)


def catchup_payload_bytes(msg: Message) -> int:
    """Payload bytes of ``msg`` that only a node which missed rounds needs: the fields of
    every round before the last one (a node that took part in the last round needs that
    round's update alone), and a snapshot. A merged update counts whole (it serves the
    last round too, which cannot be told apart in it: the total downlink, not this share,
    is what compares with and without merging). 0 for a message that is no replica
    downlink."""
    content = msg.content if msg.has_content() else None
    if content is None or M.CONFIG not in content.config_records:
        return 0
    cfg = content.config_records[M.CONFIG]
    if "from-round" not in cfg or M.ROUND not in cfg:
        return 0
    last = int(cfg[M.ROUND]) - 1  # type: ignore[arg-type]
    total = 0
    for key, value in cfg.items():
        head, _, tail = key.rpartition("-")
        merged = key.startswith(MERGED)
        if (merged or head and tail.isdigit() and int(tail) < last) and isinstance(value, bytes):
            total += len(value)
    if SNAPSHOT in content.array_records:
        total += sum(a.numpy().nbytes for a in content.array_records[SNAPSHOT].values())
    return total


def catch_up(
    cfg: ConfigRecord, snapshot: ArrayRecord | None, state: State, held: int,
    sizes: list[int], apply: Apply, fields: tuple[str, ...],
) -> tuple[State, int]:  # fmt: skip
    """Bring ``state`` (of round ``held``) to round ``server-round - 1``; verify the digest.

    Raises ``MaskPayloadError`` if the snapshot does not fit, a needed round is missing, or
    the result differs from the server's state (``apply`` raises its own payload errors).
    """
    target = int(cfg[M.ROUND]) - 1
    if snapshot is not None:
        arrays = snapshot.to_numpy_ndarrays()
        if [a.size for a in arrays] != sizes or any(a.dtype != np.float32 for a in arrays):
            raise MaskPayloadError("snapshot does not match this model's float32 state")
        state, held = [a.reshape(-1).copy() for a in arrays], target
    first = int(cfg["from-round"])
    if held < target and first > held + 1:
        raise MaskPayloadError(
            f"cannot catch up: this node holds round {held}, the updates start at round {first}"
        )
    merged = {k[len(MERGED):] for k in cfg if k.startswith(MERGED)}
    if merged and held < target:  # one update for first..target (never sent with a snapshot)
        if held != first - 1:
            raise MaskPayloadError(f"cannot apply a merged update of rounds {first}..{target}: "
                                   f"this node holds round {held}")  # fmt: skip
        if merged != set(fields):
            raise MaskPayloadError(
                f"merged update has fields {sorted(merged)}, expected {sorted(fields)}")
        state = apply(state, first, {f: cfg[f"{MERGED}{f}"] for f in fields})
        held = target
    skipped = {int(t) for t in cfg.get(SKIPPED, [])}
    if any(not first <= t <= target for t in skipped):
        raise MaskPayloadError(f"skipped rounds {sorted(skipped)} outside {first}..{target}")
    for t in range(max(first, held + 1), target + 1):
        if t not in skipped:  # an empty round changed nothing
            state = apply(state, t, {f: cfg[f"{f}-{t}"] for f in fields})
    if digest(state) != bytes(cfg["digest"]):
        raise MaskPayloadError(
            f"state after catching up to round {target} differs from the server's (digest "
            "mismatch): client and server settings differ"
        )
    return state, target


def load(context: Context, name: str, initial: Callable[[], State]) -> tuple[State, int]:
    """This node's state of method ``name`` and its round; ``initial()`` (round 0) if it has
    none yet, built only then and owned by the caller (it returns fresh arrays)."""
    key_state, key_round = f"{name}-weights", f"{name}-round"
    if key_state in context.state:
        arrays = [a.copy() for a in context.state[key_state].to_numpy_ndarrays()]
        return arrays, int(context.state[key_round]["round"])
    return initial(), 0


def store(context: Context, name: str, state: State, held: int) -> None:
    context.state[f"{name}-weights"] = ArrayRecord(state)
    context.state[f"{name}-round"] = ConfigRecord({"round": held})
