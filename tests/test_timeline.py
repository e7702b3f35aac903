"""The time and energy model on cases worked out by hand.

A link of 8 Mbps up (10^6 B/s), 16 Mbps down (2 x 10^6 B/s) and 100 ms of round trip makes
every figure below a few lines of arithmetic, written next to each assertion.
"""

from __future__ import annotations

import math

import pytest

from pemn_fl import timeline as T
from pemn_fl import timing as TM
from pemn_fl.profiles import Device, Link, Radio
from pemn_fl.transport import Call

LINK = Link("test", "test link", uplink_mbps=8, downlink_mbps=16, rtt_ms=100)
SLOW = Link("slow", "slow link", uplink_mbps=0.8, downlink_mbps=1.6, rtt_ms=100)
DEVICE = Device("dev", "1 GFLOP/s", flops_per_s=1e9, power_w=2.0)
SERVER = Device("srv", "10 GFLOP/s", flops_per_s=1e10)
RADIO = Radio(active_w=1.0, up_w_per_mbps=0.5, down_w_per_mbps=0.1, tail=((10.0, 1.0),),
              promotion_s=0.25, promotion_w=1.2)  # fmt: skip
RADIO_LINK = Link("radio", "with a radio", uplink_mbps=8, downlink_mbps=16, rtt_ms=100,
                  radio=RADIO)  # fmt: skip


def obj(request: float, response: float) -> Call:
    return Call("pull-object", request, response)


def test_one_call_is_its_request_up_a_round_trip_and_its_response_down() -> None:
    end, arrived = T.transfer([Call("pull-messages", 1000, 4000)], 5.0, LINK, workers=1)
    assert end == pytest.approx(5.0 + 1000 / 1e6 + 0.1 + 4000 / 2e6)  # 5.103
    assert arrived == [pytest.approx(5.0 + 0.001 + 0.05)]  # half a round trip after sending


def test_two_calls_at_once_share_the_uplink_and_overlap_their_round_trips() -> None:
    calls = [obj(1e6, 0), obj(1e6, 0)]
    end, _ = T.transfer(calls, 0.0, LINK, workers=2)
    # Both upload together at half the rate: 2 s, then one round trip each, overlapped.
    assert end == pytest.approx(2.0 + 0.1)
    one_by_one, _ = T.transfer(calls, 0.0, LINK, workers=1)
    assert one_by_one == pytest.approx(2 * (1.0 + 0.1))


def test_many_small_calls_are_round_trip_bound_two_at_a_time() -> None:
    end, _ = T.transfer([obj(0, 0)] * 5, 0.0, LINK, workers=2)
    assert end == pytest.approx(3 * 0.1)  # ceil(5 / 2) round trips
    end, _ = T.transfer([obj(0, 0)] * 5, 0.0, LINK, workers=1)
    assert end == pytest.approx(5 * 0.1)


def test_a_large_object_and_small_ones_beside_it() -> None:
    # A: 2 MB down; B and C: empty. t = 0.1: A starts downloading alone (1 s), B ends and C
    # starts its round trip (ends 0.2). A ends at 1.1 s: C hid behind it.
    end, _ = T.transfer([obj(0, 2e6), obj(0, 0), obj(0, 0)], 0.0, LINK, workers=2)
    assert end == pytest.approx(1.1)


def test_a_message_runs_its_object_calls_two_at_a_time_and_the_others_alone() -> None:
    calls = [Call("pull-messages", 0, 0), obj(0, 0), obj(0, 0), obj(0, 0),
             Call("confirm-message-received", 0, 0)]  # fmt: skip
    end, _ = T.message_transfer(calls, 0.0, LINK)
    assert end == pytest.approx(0.1 + 2 * 0.1 + 0.1)


def _round(*clients: T.ClientRound, server_flops: int = 0) -> T.RoundInput:
    return T.RoundInput(1, tuple(clients), server_flops)


def _client(partition: int, flops: int, up: float = 1000.0, status: str = "replied"
            ) -> T.ClientRound:  # fmt: skip
    down = (Call("pull-messages", 1000, 4000),)
    return T.ClientRound(partition, status, down, (Call("push-messages", up, 100),) if
                         status != "none" else (), flops)  # fmt: skip


def test_the_slowest_client_decides_the_round_then_the_server_works() -> None:
    line = T.Timeline({0: LINK, 1: SLOW}, {0: DEVICE, 1: DEVICE}, SERVER, transport="ideal")
    timing = line.round(_round(_client(0, 10**9), _client(1, 10**9), server_flops=5 * 10**9))
    fast, slow = timing.clients
    # Each: pull (1000 B up, 4000 B down, one round trip), 1 s of training, push 1000 B up
    # (+100 B back); the reply counts when its request is in (half a round trip later).
    fast_arrival = (0.001 + 0.1 + 0.002) + 1.0 + 0.001 + 0.05
    slow_arrival = (0.01 + 0.1 + 0.02) + 1.0 + 0.01 + 0.05
    assert fast.arrived == pytest.approx(fast_arrival)
    assert slow.arrived == pytest.approx(slow_arrival)
    assert timing.end == pytest.approx(slow_arrival)
    assert timing.next_start == pytest.approx(slow_arrival + 0.5)  # 5 GFLOP at 10 GFLOP/s
    assert line.now == timing.next_start and timing.late == []


def test_a_deadline_cuts_the_straggler_and_ends_the_round_at_the_deadline() -> None:
    line = T.Timeline({0: LINK, 1: LINK}, {0: DEVICE, 1: DEVICE}, SERVER, transport="ideal",
                      deadline=2.0)  # fmt: skip
    timing = line.round(_round(_client(0, 10**9), _client(1, 3 * 10**9)))
    assert [c.counted for c in timing.clients] == [True, False]  # 3 s of training > 2 s
    assert timing.late == [1] and timing.end == pytest.approx(2.0)


def test_flower_polling_quantises_the_round_and_delays_the_fetch() -> None:
    line = T.Timeline({0: LINK}, {0: DEVICE}, SERVER, transport="flower", seed=3)
    anchor = line.anchor[0]
    assert -(T.NODE_POLL_S + 0.2) <= anchor <= 0  # a seeded phase within one poll cycle
    # A poll cycle: the empty poll (its 1000 B request, a round trip, the short answer) and
    # the SuperNode's sleep.
    period = T.NODE_POLL_S + 1000 / 1e6 + 0.1 + T.EMPTY_POLL_RESPONSE / 2e6
    timing = line.round(_round(_client(0, 10**9)))
    (c,) = timing.clients
    reach = 1000 / 1e6 + 0.05  # the poll's request reaches the SuperLink
    k = math.ceil((0 - reach - anchor) / period)
    assert c.fetched == pytest.approx(anchor + k * period)
    assert c.downloaded == pytest.approx(c.fetched + 0.103)
    # The reply is looked for every 0.5 s from the end of the pull: 1 s of training -> 1.0.
    assert c.computed == pytest.approx(c.downloaded + 1.0)
    assert c.finished == pytest.approx(c.downloaded + 1.0 + 0.001 + 0.1 + 100 / 2e6)
    # The ServerApp pulls every 3 s from the round's start.
    assert timing.end == pytest.approx(3.0 * math.ceil(c.arrived / 3.0))
    # The node polls again at once after its push: the next fetch follows from there.
    assert line.anchor[0] == pytest.approx(c.finished)


def test_flower_deadline_counts_replies_up_to_the_last_pull_before_it() -> None:
    line = T.Timeline({0: LINK}, {0: DEVICE}, SERVER, transport="flower", deadline=7.0)
    assert line.cutoff(10.0) == pytest.approx(10.0 + 6.0)  # pulls at 0, 3, 6 s
    timing = line.round(_round(_client(0, 20 * 10**9)))  # 20 s of training
    assert timing.late == [0] and timing.end == pytest.approx(6.0 + 3.0)


def test_a_client_that_never_replies_holds_the_round_to_the_deadline_or_is_an_error() -> None:
    line = T.Timeline({0: LINK}, {0: DEVICE}, SERVER, transport="ideal", deadline=30.0)
    timing = line.round(_round(_client(0, 10**9, status="none")))
    assert timing.late == [0] and timing.end == pytest.approx(30.0)
    endless = T.Timeline({0: LINK}, {0: DEVICE}, SERVER, transport="ideal")
    with pytest.raises(ValueError, match="never ends"):
        endless.round(_round(_client(0, 10**9, status="none")))


def test_energy_is_active_power_per_megabit_terms_the_tail_between_and_after() -> None:
    line = T.Timeline({0: RADIO_LINK}, {0: DEVICE}, SERVER, transport="ideal")
    line.last_active[0] = -1.0  # the radio was busy a second ago: no promotion
    (c,) = line.round(_round(_client(0, 5 * 10**9))).clients  # 5 s of training
    pull = 0.103
    push = 0.001 + 0.1 + 100 / 2e6
    down_window = 1.0 * pull + 0.5 * 1000 * 8 / 1e6 + 0.1 * 4000 * 8 / 1e6
    gap = 1.0 * 5.0  # training (5 s) inside the 10 s tail, at the tail's 1 W
    up_window = 1.0 * push + 0.5 * 1000 * 8 / 1e6 + 0.1 * 100 * 8 / 1e6
    tail = 10.0 * 1.0
    assert c.radio_j == pytest.approx(down_window + gap + up_window + tail)
    assert c.compute_j == pytest.approx(2.0 * 5.0)  # 2 W for 5 s


def test_a_radio_idle_past_its_tail_is_promoted_first_which_costs_time_and_energy() -> None:
    line = T.Timeline({0: RADIO_LINK}, {0: DEVICE}, SERVER, transport="ideal")
    (c,) = line.round(_round(_client(0, 20 * 10**9))).clients  # 20 s: past the 10 s tail
    # Promoted before the pull (idle since forever) and again before the push.
    assert c.fetched == pytest.approx(0.25)
    assert c.radio_j == pytest.approx(
        2 * 0.25 * 1.2 + (0.103 + 0.004 + 0.0032) + 10.0
        + (0.101 + 0.00005 + 0.004 + 0.00008) + 10.0)
    assert c.finished == pytest.approx(0.25 + 0.103 + 20.0 + 0.25 + 0.10105)


def test_the_same_rounds_give_the_same_seconds_every_time() -> None:
    def replay() -> list[float]:
        line = T.Timeline({0: LINK, 1: SLOW}, {0: DEVICE, 1: DEVICE}, SERVER, seed=11)
        return [line.round(_round(_client(0, 10**9), _client(1, 2 * 10**9),
                                  server_flops=10**9)).next_start for _ in range(5)]
    assert replay() == replay()


def test_in_the_loop_slow_links_become_stragglers_and_the_record_replays_the_same(
    flower_identity: None,
) -> None:
    """MeteredGrid + LiveClock on real messages: the NB-IoT client's reply arrives past the
    deadline in simulated time and is dropped as late; replaying the rows the run records
    (``clientlog.rows``) gives the same seconds and joules to the last bit."""
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID

    from pemn_fl import clientlog
    from pemn_fl.accounting import MeteredGrid
    from pemn_fl.profiles import links
    from tests.harness import stamp

    class Echo:
        """Answers every message at once with a 2 KB update."""

        def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN202
            replies = []
            for msg in messages:
                stamp(msg, SUPERLINK_NODE_ID)
                reply = Message(RecordDict({"update": ConfigRecord({"u": b"\x01" * 2000})}),
                                reply_to=msg)  # fmt: skip
                replies.append(stamp(reply, msg.metadata.dst_node_id))
            return replies

    population = {0: links()["fibre"], 1: links()["nbiot"]}
    devices = {0: DEVICE, 1: DEVICE}
    work = clientlog.Work(train_flops_per_example=1000, epochs=1, examples={0: 10, 1: 10})
    partition_of = {11: 0, 12: 1}

    def clock() -> TM.LiveClock:
        line = T.Timeline(population, devices, SERVER, transport="ideal", deadline=10.0)
        return TM.LiveClock(line, partition_of, work.train_flops)

    live = clock()
    grid = MeteredGrid(Echo(), clock=live)  # type: ignore[arg-type]
    content = RecordDict({"arrays": ArrayRecord([np.zeros(5000, dtype=np.float32)])})
    sent = [Message(content=content, dst_node_id=n, message_type="train.x") for n in (11, 12)]
    kept = list(grid.send_and_receive(sent))
    assert [r.metadata.src_node_id for r in kept] == [11]  # 20 KB at 26 kbps: past 10 s
    traffic = grid.take()
    assert traffic.messages_up == 1 and [n for n, _ in traffic.late] == [12]
    assert "past the round deadline" in traffic.late[0][1]
    live_timing = live.finish(server_flops=10**9)
    assert live_timing.late == [1] and live_timing.end == pytest.approx(10.0)
    rows = clientlog.rows("x", 1, traffic.clients, partition_of, work)
    assert [r["status"] for r in rows] == ["replied", "late"]
    assert rows[1]["up_calls"] > 0  # the late reply's calls are recorded, not counted
    replayed = clock().timeline.round(T.RoundInput(1, tuple(
        T.ClientRound(int(r["partition"]), str(r["status"]),
                      tuple(clientlog.decode_calls(r["down_calls_detail"])),
                      tuple(clientlog.decode_calls(r["up_calls_detail"])), int(r["train_flops"]))
        for r in rows), 10**9))  # fmt: skip
    assert replayed.next_start == live_timing.next_start
    assert replayed.energy_j == live_timing.energy_j
    assert [c.arrived for c in replayed.clients] == [c.arrived for c in live_timing.clients]
