"""The transport model's arithmetic on hand-made constants (``tests/test_wire.py`` checks it
against the proxy and Flower's objects; here each number is worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl import transport as T
from tests.harness import stamp

pytestmark = pytest.mark.usefixtures("flower_identity")
CALLS = ("pull-messages", "pull-object", "confirm-message-received", "push-messages",
         "push-object")  # fmt: skip


def test_a_call_is_both_headers_both_bodies_and_their_content_length_digits() -> None:
    c = T.WireConstants({"x": 100.0}, {"x": 50.5})
    # 100 + len("7") + 7 + 50.5 + len("1234") + 1234
    assert c.call("x", 7, 1234).total == 100 + 1 + 7 + 50.5 + 4 + 1234
    assert c.call("x", 0, 0).total == 100 + 1 + 50.5 + 1
    # Each part is charged to its own direction: the request up, the response down.
    assert c.call("x", 7, 1234).request == 100 + 1 + 7
    assert c.call("x", 7, 1234).response == 50.5 + 4 + 1234


def test_fitted_constants_are_each_calls_mean_header() -> None:
    meter = {"request_header_base": {"pull-object": {"100": 3, "110": 1}},
             "response_header_base": {"pull-object": {"80": 1, "81": 1}}}  # fmt: skip
    fitted = T.fit_constants(meter)
    assert fitted.request_header == {"pull-object": 102.5}
    assert fitted.response_header == {"pull-object": 80.5}


def test_the_shipped_constants_cover_every_call_the_model_makes() -> None:
    c = T.default_constants()
    assert set(CALLS) <= set(c.request_header) and set(CALLS) <= set(c.response_header)
    assert all(600 < c.request_header[k] < 1200 for k in CALLS)  # ~840 B of headers measured


def _message() -> Message:
    content = RecordDict({"a": ArrayRecord([np.zeros(10, np.float32)]),
                          "c": ConfigRecord({"x": b"abc"})})  # fmt: skip
    return Message(content=content, dst_node_id=11, message_type="train.x")


def _headers_only(value: float) -> T.WireConstants:
    return T.WireConstants(dict.fromkeys(CALLS, value), dict.fromkeys(CALLS, value))


def test_each_call_costs_its_headers_once_each_way() -> None:
    # Raising every header by 1000 B raises the total by 2000 B per call: downlink = pull-
    # messages + one pull-object per object + confirm; the message, its RecordDict, 2 records,
    # 1 array and its one chunk are 6 objects -> 8 calls.
    msg = _message()
    extra = T.downlink_wire_bytes(msg, _headers_only(1000)) - T.downlink_wire_bytes(
        msg, _headers_only(0))  # fmt: skip
    assert extra == 8 * 2000
    stamp(msg, SUPERLINK_NODE_ID)
    reply = Message(content=_message().content, reply_to=msg)
    stamp(reply, 11)
    stored: set[str] = set()
    up = T.uplink_wire_bytes(reply, stored, _headers_only(1000)) - T.uplink_wire_bytes(
        reply, set(), _headers_only(0))  # fmt: skip
    assert up == (1 + 6) * 2000 and len(stored) == 6  # push-messages + one per object
    # The same objects again in this round: only push-messages, every object already stored.
    again = T.uplink_wire_bytes(reply, stored, _headers_only(1000)) - T.uplink_wire_bytes(
        reply, set(stored), _headers_only(0))  # fmt: skip
    assert again == 1 * 2000


class _Spy:
    """Constants that record each call's body sizes (and cost nothing)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def call(self, name: str, request_body: int, response_body: int) -> T.Call:
        self.calls.append((name, request_body, response_body))
        return T.Call(name, 0.0, 0.0)


def _field(length: int) -> int:
    """Bytes of a length-delimited protobuf field (tag < 16): tag, varint length, data."""
    varint = 1 if length < 128 else 2 if length < 16384 else 3
    return 1 + varint + length


def test_per_object_calls_have_the_protobuf_bodies_worked_out_by_hand() -> None:
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    msg = _message()
    assert (msg.metadata.dst_node_id, msg.metadata.run_id) == (11, 7)
    sizes = sorted(len(o.deflate()) for o in get_all_nested_objects(msg).values())
    # node {node_id: 11} = 2 B, as field 1: 4 B; run_id 7: 2 B; a 64-char object id: 66 B.
    node, run, oid = 4, 2, _field(64)
    spy = _Spy()
    T.downlink_wire_bytes(msg, spy)  # type: ignore[arg-type]
    pulls = [c for c in spy.calls if c[0] == "pull-object"]
    assert [c[1] for c in pulls] == [node + run + oid] * 6
    # found and available (2 B each) and the object's bytes
    assert sorted(c[2] for c in pulls) == sorted(2 + 2 + _field(n) for n in sizes)
    assert [c for c in spy.calls if c[0] == "confirm-message-received"] == [
        ("confirm-message-received", node + run + oid, 0)]  # fmt: skip
    # pull-messages answers with the object tree and the message's metadata (which alone
    # holds the message type): more than the tree and that string.
    from flwr.supercore.inflatable.inflatable_object import get_object_tree

    tree = _field(get_object_tree(msg).ByteSize())
    (_, _, pulled), = [c for c in spy.calls if c[0] == "pull-messages"]
    assert pulled > tree + len("train.x")

    msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    reply = Message(content=_message().content, reply_to=msg)
    reply.metadata.__dict__["_src_node_id"] = 11
    spy = _Spy()
    T.uplink_wire_bytes(reply, set(), spy)  # type: ignore[arg-type]
    pushes = [c for c in spy.calls if c[0] == "push-object"]
    session = _field(T.SESSION_ID_CHARS)
    reply_sizes = sorted(len(o.deflate()) for o in get_all_nested_objects(reply).values())
    assert sorted(c[1] for c in pushes) == sorted(node + run + oid + _field(n) + session
                                                  for n in reply_sizes)  # fmt: skip
    assert {c[2] for c in pushes} == {2}  # stored: true
    # push-messages' answer: reconnect {5} (4 B), one result {id: 0} (70 B), the 6 ids to
    # push (66 B each), the session id (38 B).
    (_, pushed, answer), = [c for c in spy.calls if c[0] == "push-messages"]
    assert answer == 4 + 70 + 6 * oid + session
    # push-messages sends the node (4 B), the tree, one runtime (a packed double: 10 B) and
    # the reply without its content (its metadata, with its message type), as Flower 1.42's
    # SuperNode does (fleet_http_connection.send).
    from flwr.app.message import remove_content_from_message
    from flwr.common.serde import message_to_proto

    bare = _field(message_to_proto(remove_content_from_message(reply)).ByteSize())
    assert bare > len("train.x")
    assert pushed == node + _field(get_object_tree(reply).ByteSize()) + 10 + bare
    # Without a set of stored ids (the first reply of a round): every object is pushed.
    spy_alone = _Spy()
    T.uplink_calls(reply, constants=spy_alone)  # type: ignore[arg-type]
    assert spy_alone.calls == spy.calls
