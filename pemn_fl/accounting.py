"""Byte accounting: every byte pemn-fl reports is counted here, and only here.

Two numbers per message, both *measured* on what was actually built, never estimated:

* ``payload_bytes``: the method's own payload. For PEMN-FL the encoded mask (``bytes``
  values inside ``ConfigRecord``s); for FedAvg the float arrays (numel x itemsize of every
  ``Array``). This is what a paper would call "bits sent".
* ``message_bytes``: the whole Flower ``Message`` serialised to protobuf by Flower's own
  ``flwr.common.serde.message_to_proto`` -- payload plus record names, config scalars,
  metrics, metadata (ids, round, TTL). That is what crosses the wire per node in a
  deployment; the SuperLink's content-addressed object store may *store* a message
  broadcast to many nodes once, but each node still downloads its own copy, so per-message
  size is the honest count of the message itself.

A third level, ``wire``, is what the transport adds on top, and it is not small: in Flower
1.42 a SuperNode fetches each message as several content-addressed objects, one HTTP/1.1
request per object, each with ~840 B of headers (node key, signature, timestamp). Measured
through a byte-counting proxy on loopback (3 nodes, digits, mlp), that made PEMN-FL's
traffic ~2.3x its message bytes (small messages) and FedAvg's ~1.03x. In a deployment run
``WireMeter`` reads those measured bytes (``simulations/wireproxy.py``) at every round's end; in
simulation ``pemn_fl.transport`` models them from the same messages. Idle polling and the
app bundle are not per-round traffic: deployments report them apart.

``MeteredGrid`` wraps the ``Grid`` the ServerApp receives, so *every* message of *every*
strategy, ours or Flower's built-in FedAvg, goes through ``message_bytes`` in both
directions without the strategies knowing. A reply the Simulation Engine marks late
(``faults.is_late``: the client's own work passed the round deadline) is dropped there, on
arrival, uncounted: in a deployment it would not have arrived in time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid

from pemn_fl import faults, transport


def message_bytes(msg: Message) -> int:
    """Size of the message as Flower serialises it for transport (protobuf bytes)."""
    return message_to_proto(msg).ByteSize()


def payload_bytes(msg: Message) -> int:
    """Bytes of the method payload in the message: raw array data and ``bytes`` configs."""
    if not msg.has_content():
        return 0
    total = 0
    for record in msg.content.values():
        if isinstance(record, ArrayRecord):
            for array in record.values():
                total += math.prod(array.shape) * np.dtype(array.dtype).itemsize
        elif isinstance(record, ConfigRecord):
            for value in record.values():
                if isinstance(value, bytes):
                    total += len(value)
    return total


@dataclass
class ClientTraffic:
    """One sampled node's share of a round: the calls it made each way and how it ended.

    The calls are the transport model's (``pemn_fl.transport``), also in a deployment whose
    totals the proxy measures: per call, the time model (``pemn_fl.timeline``) needs what no
    meter of aggregate bytes can give. ``status``: ``replied`` (a reply that is no error),
    ``error`` (an error reply: a failed client), ``late`` (a simulated late reply, dropped on
    arrival) or ``none`` (no reply at all).
    """

    down: list[transport.Call] = field(default_factory=list)
    up: list[transport.Call] = field(default_factory=list)
    down_payload_bytes: int = 0
    up_payload_bytes: int = 0
    down_catchup_payload_bytes: int = 0  # of down_payload_bytes: rounds the node missed
    status: str = "none"


@dataclass
class Traffic:
    """Counters for one direction-agnostic window (e.g. one round of one method)."""

    uplink_payload_bytes: int = 0
    downlink_payload_bytes: int = 0
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    messages_down: int = 0
    messages_up: int = 0
    error_replies: int = 0
    # Wire level: modelled (``transport``) unless a ``WireMeter`` replaced it with measured
    # bytes; the model's figure is kept beside the measured one for comparison.
    uplink_wire_bytes: float = 0.0
    downlink_wire_bytes: float = 0.0
    model_uplink_wire_bytes: float = 0.0
    model_downlink_wire_bytes: float = 0.0
    stored_objects: set[str] = field(default_factory=set)  # the SuperLink's de-duplication
    # Simulated late replies (``faults.is_late``), dropped on arrival: (node id, why).
    late: list[tuple[int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the reasons of the error replies
    clients: dict[int, ClientTraffic] = field(default_factory=dict)  # node id -> its share
    # Payload bytes of a downlink that serve only to catch up on missed rounds (a
    # method family's own rule, e.g. ``frames.replica.catchup_payload_bytes``); none: 0.
    catchup: Callable[[Message], int] | None = None

    def client(self, node: int) -> ClientTraffic:
        return self.clients.setdefault(node, ClientTraffic())

    def add_down(self, msg: Message) -> None:
        self.downlink_bytes += message_bytes(msg)
        payload = payload_bytes(msg)
        self.downlink_payload_bytes += payload
        self.messages_down += 1
        calls = transport.downlink_calls(msg)
        wire = sum(call.total for call in calls)
        self.model_downlink_wire_bytes += wire
        self.downlink_wire_bytes += wire
        share = self.client(msg.metadata.dst_node_id)
        share.down += calls
        share.down_payload_bytes += payload
        share.down_catchup_payload_bytes += self.catchup(msg) if self.catchup else 0

    def add_late(self, reply: Message, calls: list[transport.Call] | None = None,
                 why: str = "") -> None:  # fmt: skip
        """A late reply, noted with no byte counted: a simulated one (``faults.is_late``, its
        reason in the reply) or one the time model judged late in simulated time (``why``,
        and the ``calls`` it would have made, for the record)."""
        self.late.append((reply.metadata.src_node_id, why or reply.error.reason))
        share = self.client(reply.metadata.src_node_id)
        share.status = "late"
        share.up += calls or []

    def add_up(self, msg: Message) -> None:
        self.messages_up += 1
        if msg.has_error():
            self.error_replies += 1
            self.errors.append(msg.error.reason)
        if msg.metadata.src_node_id == SUPERLINK_NODE_ID:
            # Made by the SuperLink itself (node unavailable, reply expired): it never crossed
            # a node's link, so it is a failed client but no uplink traffic. (Whether the
            # instruction reached the node before it died, the Grid API does not say; its
            # downlink stays counted, an upper bound.)
            return
        self.uplink_bytes += message_bytes(msg)
        payload = payload_bytes(msg)
        self.uplink_payload_bytes += payload
        calls = transport.uplink_calls(msg, self.stored_objects)
        wire = sum(call.total for call in calls)
        self.model_uplink_wire_bytes += wire
        self.uplink_wire_bytes += wire
        share = self.client(msg.metadata.src_node_id)
        share.up += calls
        share.up_payload_bytes += payload
        share.status = "error" if msg.has_error() else "replied"

    @property
    def total_bytes(self) -> int:
        return self.uplink_bytes + self.downlink_bytes


# The time model's judgement of a round (``MeteredGrid.clock``).
Clock = Callable[[Traffic, list[Message]], dict[int, tuple[list[transport.Call], str]]]


@dataclass
class WireMeter:
    """Reads the byte-counting proxy's meter file (``simulations/wireproxy.py``) in a deployment.

    ``take()`` returns the bytes of each category counted since the previous call. The
    proxy counts a call before forwarding its last byte, so every message of a round is in
    the meter by the time the ServerApp closes the round; only the few hundred bytes of
    ``push-object`` answers still in flight at that instant can slip into the next round.
    """

    path: Path
    last: dict[str, int] = field(default_factory=dict)

    def read(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.path.read_text())["bytes"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return dict(self.last)  # mid-replace or gone: nothing new this time

    def take(self) -> dict[str, int]:
        now = self.read()
        delta = {k: v - self.last.get(k, 0) for k, v in now.items()}
        self.last = now
        return delta


@dataclass
class MeteredGrid(Grid):
    """A ``Grid`` that counts the bytes of every message it pushes and pulls.

    Call ``take()`` to read and reset the counters at the end of a round.
    """

    inner: Grid
    traffic: Traffic = field(default_factory=Traffic)
    wire_meter: WireMeter | None = None  # measured wire bytes (deployment with the proxy)
    catchup: Callable[[Message], int] | None = None  # see ``Traffic.catchup``
    # The time model in the loop (``pemn_fl.timeline.LiveClock``): given the round's traffic
    # so far and its replies, the replies that reach the server too late in simulated time
    # (node id -> the calls they would have made, and why); those are noted late, uncounted.
    clock: Clock | None = None

    def __post_init__(self) -> None:
        self.traffic.catchup = self.catchup

    def take(self) -> Traffic:
        out, self.traffic = self.traffic, Traffic(catchup=self.catchup)
        if self.wire_meter is not None:
            delta = self.wire_meter.take()
            out.uplink_wire_bytes = float(delta.get("uplink", 0))
            out.downlink_wire_bytes = float(delta.get("downlink", 0))
        return out

    # -- counted paths ---------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = self._arrived(self.inner.send_and_receive(messages, timeout=timeout))
        # Count after sending: pushing fills in metadata (message id, run id) that travels.
        for msg in messages:
            self.traffic.add_down(msg)
        training = any(m.metadata.message_type.startswith("train") for m in messages)
        late = self.clock(self.traffic, replies) if self.clock and training else {}
        kept = []
        for reply in replies:
            if reply.metadata.src_node_id in late:
                calls, why = late[reply.metadata.src_node_id]
                self.traffic.add_late(reply, calls, why)
            else:
                self.traffic.add_up(reply)
                kept.append(reply)
        return kept

    def _arrived(self, replies: Iterable[Message]) -> list[Message]:
        """``replies`` less the simulated late ones, which are noted, not counted."""
        kept = []
        for reply in replies:
            if faults.is_late(reply):
                self.traffic.add_late(reply)
            else:
                kept.append(reply)
        return kept

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = self.inner.push_messages(messages)
        for msg in messages:
            self.traffic.add_down(msg)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = self._arrived(self.inner.pull_messages(message_ids))
        for reply in replies:
            self.traffic.add_up(reply)
        return replies

    # -- plain delegation ------------------------------------------------------------
    def set_run(self, run):  # noqa: ANN001, ANN201
        return self.inner.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()
