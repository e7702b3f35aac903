"""``MeteredGrid`` counts what crosses the grid; the handshake gives up cleanly.

The grid under the meter is a small stand-in that answers every message at once: what is
tested is the counting around it (the real engines are covered by the end-to-end and
deployment tests, whose byte columns come from this class).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app import Error as FlowerError
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl.accounting import MeteredGrid, message_bytes, payload_bytes
from pemn_fl.server_app import ProtocolError, handshake, poll_faster
from tests.harness import stamp

pytestmark = pytest.mark.usefixtures("flower_identity")


class EchoGrid:
    """Answers each message with a fixed-size reply, or an error for node ``fail``.
    (Node ids start at 11: id 1 is the SuperLink's own.)"""

    def __init__(self, nodes: list[int], fail: int | None = None) -> None:
        self.nodes, self.fail = nodes, fail

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:  # fmt: skip
        replies = []
        for msg in messages:
            stamp(msg, SUPERLINK_NODE_ID)
            if msg.metadata.dst_node_id == self.fail:
                reply = Message(FlowerError(code=0, reason="node died"), reply_to=msg)
            else:
                content = RecordDict({"update": ConfigRecord({"mask": b"\x01" * 100})})
                reply = Message(content=content, reply_to=msg)
            stamp(reply, msg.metadata.dst_node_id)
            replies.append(reply)
        return replies


def _messages(nodes: list[int]) -> list[Message]:
    content = RecordDict({"arrays": ArrayRecord([np.zeros(250, dtype=np.float32)])})
    return [Message(content=content, dst_node_id=n, message_type="train.x") for n in nodes]


def test_every_message_is_counted_both_ways_and_take_resets() -> None:
    grid = MeteredGrid(EchoGrid([11, 12, 13], fail=13))  # type: ignore[arg-type]
    sent = _messages([11, 12, 13])
    replies = list(grid.send_and_receive(sent))
    traffic = grid.take()
    assert (traffic.messages_down, traffic.messages_up, traffic.error_replies) == (3, 3, 1)
    assert traffic.downlink_payload_bytes == 3 * 250 * 4
    assert traffic.uplink_payload_bytes == 2 * 100  # the error reply carries no payload
    assert traffic.downlink_bytes == sum(message_bytes(m) for m in sent)
    assert traffic.uplink_bytes == sum(message_bytes(r) for r in replies)
    assert traffic.downlink_bytes > traffic.downlink_payload_bytes  # framing is counted too
    assert traffic.total_bytes == traffic.uplink_bytes + traffic.downlink_bytes
    empty = grid.take()
    assert (empty.total_bytes, empty.messages_up, empty.messages_down) == (0, 0, 0)


def test_payload_bytes_counts_arrays_and_byte_configs_only() -> None:
    content = RecordDict({
        "arrays": ArrayRecord([np.zeros((3, 5), dtype=np.float64), np.zeros(7, np.uint8)]),
        "config": ConfigRecord({"mask": b"abc", "server-round": 4, "name": "not a payload"}),
    })  # fmt: skip
    assert payload_bytes(Message(content=content, dst_node_id=1, message_type="train.x")) == (
        15 * 8 + 7 + 3
    )


def test_the_handshake_gives_up_after_its_timeout_with_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match="only 1 of 2 nodes connected in 0.2s"):
        handshake(MeteredGrid(EchoGrid([5])), min_nodes=2, timeout=0.2)  # type: ignore[arg-type]


def test_the_handshake_maps_partitions_and_skips_a_failed_node() -> None:
    class HelloGrid(EchoGrid):
        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN202
            replies = []
            for i, msg in enumerate(messages):
                stamp(msg, SUPERLINK_NODE_ID)
                if msg.metadata.dst_node_id == self.fail:
                    reply = Message(FlowerError(code=0, reason="node died"), reply_to=msg)
                else:
                    reply = Message(RecordDict({"node": ConfigRecord(
                        {"partition-id": 10 + i, "num-partitions": 3})}), reply_to=msg)  # fmt: skip
                stamp(reply, msg.metadata.dst_node_id)
                replies.append(reply)
            return replies

    mapping = handshake(MeteredGrid(HelloGrid([7, 8, 9], fail=8)), min_nodes=3, timeout=5)  # type: ignore[arg-type]
    assert mapping == {10: 7, 12: 9}


def test_an_error_the_superlink_made_is_a_failed_client_but_no_uplink_traffic() -> None:
    """A dead node's 'node unavailable' reply comes from the SuperLink, not over its link."""

    class DeadNodeGrid(EchoGrid):
        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN202
            replies = list(super().send_and_receive(messages, timeout=timeout))
            for reply in replies:
                if reply.has_error():
                    stamp(reply, SUPERLINK_NODE_ID)
            return replies

    crashed = MeteredGrid(EchoGrid([11, 12], fail=12))  # type: ignore[arg-type]
    dead = MeteredGrid(DeadNodeGrid([11, 12], fail=12))  # type: ignore[arg-type]
    replies = {id(g): list(g.send_and_receive(_messages([11, 12]))) for g in (crashed, dead)}
    a, b = crashed.take(), dead.take()
    assert (a.error_replies, b.error_replies) == (1, 1)  # both are failed clients
    assert (a.messages_up, b.messages_up) == (2, 2)
    assert a.downlink_bytes == b.downlink_bytes
    # A crashed ClientApp's error reply travelled up its link; the SuperLink's did not.
    assert b.uplink_bytes < a.uplink_bytes
    good = [r for r in replies[id(dead)] if not r.has_error()]
    assert b.uplink_bytes == sum(message_bytes(r) for r in good)
    assert a.uplink_bytes == sum(message_bytes(r) for r in replies[id(crashed)])



def test_simulation_polls_the_in_memory_superlink_every_10_ms() -> None:
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                               ObjectStoreFactory())  # fmt: skip
    inner = InMemoryGrid(factory)  # as the Simulation Engine builds it: 0.1 s
    assert inner.pull_interval == 0.1
    poll_faster(inner)
    assert inner.pull_interval == 0.01
    faster_is_kept = InMemoryGrid(factory, pull_interval=0.001)
    poll_faster(faster_is_kept)
    assert faster_is_kept.pull_interval == 0.001


# -- known answers for the rest of the meter -----------------------------------------------
class PushPullGrid(EchoGrid):
    """``push_messages`` / ``pull_messages`` of a deployment's Grid, answering at once."""

    def __init__(self, nodes: list[int], late: int | None = None) -> None:
        super().__init__(nodes)
        self.late, self.pushed = late, []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushed = list(messages)
        return [str(i) for i in range(len(self.pushed))]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        from pemn_fl import faults

        on_time = [m for m in self.pushed if m.metadata.dst_node_id != self.late]
        replies = list(EchoGrid.send_and_receive(self, on_time))
        for msg in self.pushed:
            if msg.metadata.dst_node_id == self.late:
                stamp(msg, SUPERLINK_NODE_ID)
                late = faults.late_reply(msg, 9.0, 1.0, straggler=False)
                stamp(late, self.late)
                replies.append(late)
        return replies


def test_push_and_pull_are_counted_and_a_late_reply_is_dropped_uncounted() -> None:
    grid = MeteredGrid(PushPullGrid([11, 12, 13], late=12))  # type: ignore[arg-type]
    sent = _messages([11, 12, 13])
    ids = list(grid.push_messages(sent))
    replies = list(grid.pull_messages(ids))
    traffic = grid.take()
    assert [r.metadata.src_node_id for r in replies] == [11, 13]  # 12's reply came too late
    assert (traffic.messages_down, traffic.messages_up, traffic.error_replies) == (3, 2, 0)
    assert traffic.downlink_payload_bytes == 3 * 1000 and traffic.uplink_payload_bytes == 200
    assert len(traffic.late) == 1 and traffic.late[0][0] == 12
    assert "past the 1 s round deadline" in traffic.late[0][1]
    assert traffic.uplink_wire_bytes > traffic.uplink_bytes > 0
    assert traffic.downlink_wire_bytes == traffic.model_downlink_wire_bytes > 0


def test_an_error_reply_counts_as_a_message_with_its_reason_and_no_payload() -> None:
    from pemn_fl.accounting import Traffic

    sent = _messages([11])[0]
    stamp(sent, SUPERLINK_NODE_ID)
    reply = Message(FlowerError(code=0, reason="node died"), reply_to=sent)
    stamp(reply, 11)
    traffic = Traffic()
    traffic.add_up(reply)
    assert (traffic.messages_up, traffic.error_replies, traffic.errors) == (1, 1, ["node died"])
    assert traffic.uplink_payload_bytes == 0 and traffic.uplink_bytes == message_bytes(reply)
    assert payload_bytes(reply) == 0


def test_wire_meter_takes_the_bytes_since_the_last_take(tmp_path) -> None:  # noqa: ANN001
    import json

    from pemn_fl.accounting import WireMeter

    path = tmp_path / "meter.json"
    meter = WireMeter(path)
    assert meter.take() == {}  # no file yet: nothing
    path.write_text(json.dumps({"bytes": {"uplink": 100, "downlink": 40}}))
    assert meter.take() == {"uplink": 100, "downlink": 40}
    path.write_text(json.dumps({"bytes": {"uplink": 150, "downlink": 40, "idle": 5}}))
    assert meter.take() == {"uplink": 50, "downlink": 0, "idle": 5}
    path.write_text("{torn")  # mid-replace: nothing new this time
    assert meter.take() == {"uplink": 0, "downlink": 0, "idle": 0}
    grid = MeteredGrid(EchoGrid([11]), wire_meter=meter)  # type: ignore[arg-type]
    list(grid.send_and_receive(_messages([11])))
    path.write_text(json.dumps({"bytes": {"uplink": 1150, "downlink": 2040, "idle": 5}}))
    traffic = grid.take()  # measured wire bytes replace the model's; the model's kept beside
    assert (traffic.uplink_wire_bytes, traffic.downlink_wire_bytes) == (1000.0, 2000.0)
    assert traffic.model_uplink_wire_bytes > 0 and traffic.model_downlink_wire_bytes > 0


class RecordingGrid:
    """Records what the meter passes through to the grid it wraps."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_run(self, run):  # noqa: ANN001, ANN201
        self.calls.append(("set_run", run))

    @property
    def run(self):  # noqa: ANN201
        return "the run"

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        self.calls.append(("create_message", content, message_type, dst_node_id, group_id, ttl))
        return "a message"

    def get_node_ids(self):  # noqa: ANN201
        return [11, 12]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        self.calls.append(("send_and_receive", len(list(messages)), timeout))
        return []

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        return ["id-1"]

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        self.calls.append(("pull_messages", list(message_ids)))
        return []


def test_the_meter_passes_every_call_through_unchanged() -> None:
    inner = RecordingGrid()
    grid = MeteredGrid(inner)  # type: ignore[arg-type]
    grid.set_run(7)
    assert grid.create_message("c", "train.x", 12, "g", 30.0) == "a message"
    assert list(grid.get_node_ids()) == [11, 12] and grid.run == "the run"
    grid.send_and_receive([], timeout=4.5)
    grid.pull_messages(["id-1", "id-2"])
    assert inner.calls == [("set_run", 7), ("create_message", "c", "train.x", 12, "g", 30.0),
                           ("send_and_receive", 0, 4.5), ("pull_messages", ["id-1", "id-2"])]


def test_counters_add_up_over_several_replies_and_objects_are_stored_once() -> None:
    from pemn_fl import transport
    from pemn_fl.accounting import Traffic

    sent = _messages([11, 12, 13])
    replies = EchoGrid([11, 12, 13], fail=13).send_and_receive(sent)
    failed = Message(FlowerError(code=0, reason="again"), reply_to=sent[0])
    failed.metadata.__dict__["_src_node_id"] = 11
    traffic = Traffic()
    for reply in [*replies, failed]:
        traffic.add_up(reply)
    assert (traffic.messages_up, traffic.error_replies) == (4, 2)
    assert traffic.errors == ["node died", "again"]
    # Replies 11 and 12 carry the same update: its objects are pushed once.
    stored: set[str] = set()
    shared = sum(transport.uplink_wire_bytes(r, stored) for r in [*replies, failed])
    fresh = sum(transport.uplink_wire_bytes(r) for r in [*replies, failed])
    assert traffic.uplink_wire_bytes == traffic.model_uplink_wire_bytes == shared < fresh


def test_a_meter_file_without_a_direction_counts_zero_for_it(tmp_path) -> None:  # noqa: ANN001
    import json

    from pemn_fl.accounting import WireMeter

    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"bytes": {"idle": 3}}))
    grid = MeteredGrid(EchoGrid([11]), wire_meter=WireMeter(path))  # type: ignore[arg-type]
    traffic = grid.take()
    assert (traffic.uplink_wire_bytes, traffic.downlink_wire_bytes) == (0.0, 0.0)


def test_each_clients_share_holds_its_calls_and_how_its_round_ended() -> None:
    """clients.csv and the time model read each node's share: every downlink call (two
    messages to one node in a round: both), its uplink calls, and its status: replied, error
    (a failed client), late (noted, uncounted)."""
    from pemn_fl import transport

    grid = MeteredGrid(PushPullGrid([11, 12, 13], late=12))  # type: ignore[arg-type]
    sent = _messages([11, 12, 13])
    list(grid.pull_messages(list(grid.push_messages(sent))))
    traffic = grid.take()
    shares = traffic.clients
    assert {n: s.status for n, s in shares.items()} == {11: "replied", 12: "late", 13: "replied"}
    assert shares[11].down == transport.downlink_calls(sent[0]) and shares[11].up
    assert shares[12].up == []  # a simulated late reply: no uplink call recorded
    both = MeteredGrid(EchoGrid([11, 12], fail=12))  # type: ignore[arg-type]
    first, second = _messages([11, 12]), _messages([11])
    list(both.send_and_receive(first))
    list(both.send_and_receive(second))
    shares = both.take().clients
    calls = transport.downlink_calls
    assert shares[11].down == calls(first[0]) + calls(second[0])
    assert (shares[11].status, shares[12].status) == ("replied", "error")


def test_a_reply_the_time_model_judges_late_is_noted_with_its_calls_and_why() -> None:
    """``--link`` with a deadline: the clock names the replies that arrive too late in
    simulated time; each is noted late with the calls it would have made and the reason,
    and neither its message nor its bytes are counted."""
    from pemn_fl import transport

    seen: list[tuple[object, int]] = []

    def clock(traffic, replies):  # noqa: ANN001, ANN202
        seen.append((traffic, len(replies)))
        late = next(r for r in replies if r.metadata.src_node_id == 12)
        return {12: (transport.uplink_calls(late), "arrives at 41 s, past the 30 s deadline")}

    grid = MeteredGrid(EchoGrid([11, 12]), clock=clock)  # type: ignore[arg-type]
    kept = list(grid.send_and_receive(_messages([11, 12])))
    traffic = grid.take()
    assert [r.metadata.src_node_id for r in kept] == [11]
    assert seen == [(traffic, 2)]  # the round's own traffic, every reply
    assert traffic.late == [(12, "arrives at 41 s, past the 30 s deadline")]
    assert (traffic.messages_up, traffic.clients[12].status) == (1, "late")
    assert len(traffic.clients[12].up) >= 1 and traffic.uplink_payload_bytes == 100
    # Only training rounds are judged (an evaluation round has no deadline in the model).
    evaluation = [Message(content=m.content, dst_node_id=m.metadata.dst_node_id,
                          message_type="evaluate.x") for m in _messages([11, 12])]  # fmt: skip
    assert len(list(grid.send_and_receive(evaluation))) == 2 and len(seen) == 1
