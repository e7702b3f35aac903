"""Transport model: the wire bytes a Flower 1.42 deployment spends on one message.

In simulation no byte crosses a network, so the ``wire`` level is modelled, from the same
``Message`` objects the strategies send, by replaying what a SuperNode and the SuperLink do
with it in Flower 1.42 (read from its source; measured by ``simulations/wireproxy.py``):

* an instruction (downlink) reaches a node as ``pull-messages`` (its metadata and object
  tree), one ``pull-object`` per object of the tree (a ``Message`` is content-addressed: the
  message, its ``RecordDict``, each record, each ``Array`` and each ``ArrayChunk`` of at most
  5 MiB are separate objects, in post-order), then ``confirm-message-received``;
* a reply (uplink) goes out as ``push-messages`` (metadata + tree; the SuperLink answers with
  the objects it still needs) and one ``push-object`` per needed object; an object another
  reply of the same round already pushed (the SuperLink stores each id once) is not sent
  again;
* each call is one HTTP/1.1 request/response: the protobuf bodies are built here exactly as
  Flower builds them (so their sizes are exact), the headers are the measured constants
  (``wire_constants.json``: per call type, the mean header size without its
  ``Content-Length`` digits, which are added per call).

Not modelled: idle polling and heartbeats (time-dependent, reported apart in deployments),
the app bundle download, registration, and retries of a ``pull-object`` that came too early.
``python -m bench.wire_calibrate`` re-measures the constants on a real SuperLink and prints
model vs measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flwr.app import Message
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
    Reconnect,
)
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    ConfirmMessageReceivedResponse,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.node_pb2 import Node
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
    iterate_object_tree,
    no_object_id_recompute,
)

CONSTANTS_FILE = Path(__file__).with_name("wire_constants.json")
SESSION_ID_CHARS = 36  # a uuid4 string, the SuperLink's object push session id
RUNTIME_SECONDS = 1.5  # clientapp_runtime_list: one double; its value does not change the size


@dataclass(frozen=True)
class Call:
    """One HTTP call of a SuperNode: its type and its wire bytes each way, headers included.

    ``request`` travels node -> SuperLink (the node's uplink), ``response`` SuperLink ->
    node (its downlink), whichever message the call serves: pulling an instruction sends
    small requests up and the objects down. The time model (``pemn_fl.timeline``) charges
    each part to its own direction's bandwidth.
    """

    name: str
    request: float
    response: float

    @property
    def total(self) -> float:
        return self.request + self.response

    @property
    def is_object(self) -> bool:
        """An object transfer: Flower 1.42 runs these two at a time (the others one by one)."""
        return self.name in OBJECT_CALLS


OBJECT_CALLS = frozenset({"pull-object", "push-object"})


@dataclass(frozen=True)
class WireConstants:
    """Mean HTTP header bytes per call type, without the Content-Length digits."""

    request_header: dict[str, float]
    response_header: dict[str, float]

    def call(self, name: str, request_body: int, response_body: int) -> Call:
        """One request/response pair with these protobuf body sizes, headers included."""
        return Call(name,
                    self.request_header[name] + len(str(request_body)) + request_body,
                    self.response_header[name] + len(str(response_body)) + response_body)

    @classmethod
    def load(cls, path: Path = CONSTANTS_FILE) -> WireConstants:
        data = json.loads(path.read_text())
        return cls(data["request_header"], data["response_header"])


@lru_cache(maxsize=1)
def default_constants() -> WireConstants:
    return WireConstants.load()


def _objects(msg: Message) -> tuple[object, dict[str, bytes]]:
    """The message's object tree and each object's bytes as sent (deflated)."""
    with no_object_id_recompute():
        nested = get_all_nested_objects(msg)
        return get_object_tree(msg), {oid: obj.deflate() for oid, obj in nested.items()}


def downlink_wire_bytes(msg: Message, constants: WireConstants | None = None) -> float:
    """Wire bytes for one node to receive ``msg`` (an instruction the server pushed)."""
    return sum(call.total for call in downlink_calls(msg, constants))


def downlink_calls(msg: Message, constants: WireConstants | None = None) -> list[Call]:
    """The calls one node makes to receive ``msg``, in Flower's order."""
    c = constants or default_constants()
    tree, contents = _objects(msg)
    meta = msg.metadata
    node = Node(node_id=meta.dst_node_id)
    pulled = PullMessagesResponse(
        messages_list=[message_to_proto(remove_content_from_message(msg))],
        message_object_trees=[tree],
    )
    calls = [c.call("pull-messages", PullMessagesRequest(node=node).ByteSize(),
                    pulled.ByteSize())]  # fmt: skip
    # The node pulls every object of the tree in post-order (an object listed twice, twice).
    for sub in iterate_object_tree(tree):
        request = PullObjectRequest(node=node, run_id=meta.run_id, object_id=sub.object_id)
        response = PullObjectResponse(object_found=True, object_available=True,
                                      object_content=contents[sub.object_id])  # fmt: skip
        calls.append(c.call("pull-object", request.ByteSize(), response.ByteSize()))
    confirm = ConfirmMessageReceivedRequest(node=node, run_id=meta.run_id,
                                            message_object_id=tree.object_id)  # fmt: skip
    calls.append(c.call("confirm-message-received", confirm.ByteSize(),
                        ConfirmMessageReceivedResponse().ByteSize()))  # fmt: skip
    return calls


def uplink_wire_bytes(msg: Message, stored: set[str] | None = None,
                      constants: WireConstants | None = None) -> float:  # fmt: skip
    """Wire bytes for a node to send reply ``msg``.

    ``stored``: object ids the SuperLink already holds (other replies of the same round);
    those are not pushed again, and the ids pushed here are added to it.
    """
    return sum(call.total for call in uplink_calls(msg, stored, constants))


def uplink_calls(msg: Message, stored: set[str] | None = None,
                 constants: WireConstants | None = None) -> list[Call]:  # fmt: skip
    """The calls a node makes to send reply ``msg``, in Flower's order (``stored``: as in
    ``uplink_wire_bytes``)."""
    c = constants or default_constants()
    stored = set() if stored is None else stored
    tree, contents = _objects(msg)  # an error reply is one object: the message itself
    meta = msg.metadata
    node = Node(node_id=meta.src_node_id)
    needed = [oid for oid in contents if oid not in stored]  # post-order, each id once
    session = "x" * SESSION_ID_CHARS
    push = PushMessagesRequest(
        node=node, messages_list=[message_to_proto(remove_content_from_message(msg))],
        message_object_trees=[tree], clientapp_runtime_list=[RUNTIME_SECONDS],
    )  # fmt: skip
    answer = PushMessagesResponse(reconnect=Reconnect(reconnect=5),
                                  results={meta.message_id or tree.object_id: 0},
                                  objects_to_push=needed, session_id=session)  # fmt: skip
    calls = [c.call("push-messages", push.ByteSize(), answer.ByteSize())]
    for oid in needed:
        request = PushObjectRequest(node=node, run_id=meta.run_id, object_id=oid,
                                    session_id=session, object_content=contents[oid])
        calls.append(c.call("push-object", request.ByteSize(),
                            PushObjectResponse(stored=True).ByteSize()))  # fmt: skip
        stored.add(oid)
    return calls


def fit_constants(meter: dict) -> WireConstants:
    """Header constants from a wire meter snapshot (``wireproxy.Meter.snapshot``)."""

    def means(histograms: dict[str, dict[str, int]]) -> dict[str, float]:
        out = {}
        for call, hist in histograms.items():
            n = sum(hist.values())
            out[call] = round(sum(int(size) * k for size, k in hist.items()) / n, 2)
        return out

    return WireConstants(means(meter["request_header_base"]),
                         means(meter["response_header_base"]))  # fmt: skip
