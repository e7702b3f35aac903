"""The time and energy model: how long each round takes on the clients' links, and what it
costs their batteries, from the calls and FLOPs a run recorded.

Bytes are not time. A round of a synchronous FL protocol lasts as long as its slowest
sampled client, every HTTP call pays a round trip, uplinks are slower than downlinks, and a
phone's radio keeps drawing power for seconds after its last byte. This module replays a
round (``RoundInput``: each sampled client's calls, one by one, as ``pemn_fl.transport``
enumerates them, its training FLOPs and how its round ended; the server's FLOPs) on each
client's link and device (``pemn_fl.profiles``) and returns when every client finished,
when the round ended, and the joules each client spent. Nothing is timed on this machine:
the same run gives the same seconds anywhere.

**The transport** (``transport="flower"``, Flower 1.42 as deployed; its source, read):

* a SuperNode polls the SuperLink (``pull-messages``) and, finding nothing, sleeps
  ``NODE_POLL_S`` (``flwr/supernode/start_client_internal.py``: ``time.sleep(3)``); an
  instruction waits for the node's next poll;
* it pulls the message's objects with ``OBJECT_WORKERS`` threads at once
  (``FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PULLS``/``_PUSHES``, default 2,
  ``flwr/supercore/constant.py``), then confirms; the other calls go one at a time;
* the ClientApp starts (``CLIENTAPP_S``: launching it, measured on a real deployment,
  ``bench.time_validation``), trains (FLOPs / the device's FLOP/s); the node looks for the
  reply every ``REPLY_POLL_S`` from the end of its pull (``_push_messages``:
  ``time.sleep(0.5)``), then pushes it (``push-messages``, objects two at a time) and polls
  again at once;
* the ServerApp pulls replies every ``SERVER_POLL_S`` (``flwr/superlink/grid/http_grid.py``:
  ``time.sleep(3)``) until every reply is in or the round deadline passes; then aggregates
  and evaluates (server FLOPs / the server's FLOP/s) and sends the next round.

``transport="ideal"`` drops the polling (an instruction reaches a node at once, a reply the
server at once, no start-up): the time the links and devices alone need.

**One HTTP call** sends its request at the uplink rate, waits a round trip, and receives its
response at the downlink rate; calls running at once share each direction's bandwidth
equally (a fluid model, exact for this rule). A reply is at the SuperLink when its last
object's request has arrived (half a round trip after it is sent).

**Radio energy** (Huang et al. 2012, as AT&T ARO implements it; ``profiles.Radio``): each
active period (pulling the instruction, pushing the reply) draws ``active_w`` for its length
plus ``up_w_per_mbps`` x megabits sent and ``down_w_per_mbps`` x megabits received; after
it the radio stays in its tail; a radio that went idle is promoted first (``promotion_s``
of delay at ``promotion_w``). A round's radio energy runs from the poll that fetched the
instruction to the end of the tail after the reply (the tail is the round's, whatever
follows it); the polling of idle nodes between their rounds is not counted. **Compute
energy**: the device's power x its training time (the ClientApp's start-up is not counted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pemn_fl.profiles import Device, Link
from pemn_fl.prototype import derived_seed
from pemn_fl.transport import Call

NODE_POLL_S = 3.0  # a SuperNode's sleep between polls that found nothing (Flower 1.42)
REPLY_POLL_S = 0.5  # a SuperNode's wait between looks for the ClientApp's reply
SERVER_POLL_S = 3.0  # the ServerApp's sleep between pulls of the replies
OBJECT_WORKERS = 2  # objects pulled / pushed at once
CLIENTAPP_S = 0.0  # a ClientApp's start-up per message; set from bench.time_validation
TRANSPORTS = ("flower", "ideal")
# The empty poll's response: a PullMessagesResponse with no message (headers + a few bytes).
EMPTY_POLL_RESPONSE = 131.0


@dataclass(frozen=True)
class ClientRound:
    """One sampled client's round as a run recorded it (``pemn_fl.clientlog``)."""

    partition: int
    status: str  # replied, error, late, none
    down: tuple[Call, ...]
    up: tuple[Call, ...]
    train_flops: int
    # Seconds from the end of the pull to the reply being pushed, when measured instead of
    # modelled (``bench.time_validation`` feeds a real deployment's: its ClientApp start-up,
    # training and the node's look for the reply); None: the model's own.
    work_s: float | None = None


@dataclass(frozen=True)
class RoundInput:
    round: int
    clients: tuple[ClientRound, ...]
    server_flops: int


@dataclass
class ClientTiming:
    partition: int
    fetched: float  # the poll that found the instruction started
    downloaded: float  # the instruction and its objects are in, receipt confirmed
    computed: float  # the reply exists
    arrived: float  # the reply is at the SuperLink (inf: never)
    finished: float  # its last call answered
    counted: bool  # its reply arrived by the deadline
    radio_j: float = 0.0
    compute_j: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.radio_j + self.compute_j


@dataclass
class RoundTiming:
    round: int
    start: float
    end: float  # the server has the replies (or gave up at the deadline)
    next_start: float  # aggregation and evaluation done: the next round starts
    clients: list[ClientTiming] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.next_start - self.start

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.clients)

    @property
    def late(self) -> list[int]:
        return [c.partition for c in self.clients if not c.counted]


def transfer(calls: Sequence[Call], start: float, link: Link, workers: int
             ) -> tuple[float, list[float]]:  # fmt: skip
    """Run ``calls`` on ``link`` from ``start``, ``workers`` at a time (in order, each
    worker taking the next call as it finishes); return the end and, per call, when its
    request had fully arrived at the other side.

    A call uploads its request (sharing the uplink equally with the other uploading calls),
    waits one round trip, then downloads its response (sharing the downlink likewise).
    """
    if not calls:
        return start, []
    up, down, rtt = link.uplink_bps, link.downlink_bps, link.rtt_s
    # Per active call: [index, phase (0 up, 1 wait, 2 down), what is left (bytes or s)]
    queue = list(range(len(calls)))
    active: list[list[float]] = []
    arrived = [math.nan] * len(calls)
    now = start

    def begin(i: int) -> list[float]:
        return [i, 0, float(calls[i].request)]

    while queue and len(active) < workers:
        active.append(begin(queue.pop(0)))
    while active:
        n_up = sum(1 for a in active if a[1] == 0)
        n_down = sum(1 for a in active if a[1] == 2)
        rates = [up / n_up if a[1] == 0 else (1.0 if a[1] == 1 else down / n_down)
                 for a in active]  # bytes/s, or seconds per second while waiting
        step = min(a[2] / r for a, r in zip(active, rates, strict=True))
        now += step
        finished = []
        for a, r in zip(active, rates, strict=True):
            a[2] -= step * r
            while a[2] <= 1e-9 and a[1] < 3:
                if a[1] == 0:
                    arrived[int(a[0])] = now + rtt / 2
                    a[1], a[2] = 1, rtt
                elif a[1] == 1:
                    a[1], a[2] = 2, float(calls[int(a[0])].response)
                else:
                    a[1] = 3
            if a[1] == 3:
                finished.append(a)
        for a in finished:
            active.remove(a)
            if queue:
                active.append(begin(queue.pop(0)))
    return now, arrived


def message_transfer(calls: Sequence[Call], start: float, link: Link
                     ) -> tuple[float, float]:  # fmt: skip
    """A whole message's calls as Flower 1.42 makes them: every object call
    ``OBJECT_WORKERS`` at a time, every other call alone, in order. Returns (end, the
    arrival at the SuperLink of the last request)."""
    now, last = start, start
    i = 0
    while i < len(calls):
        j = i
        while j < len(calls) and calls[j].is_object == calls[i].is_object:
            j += 1
        now, arrived = transfer(calls[i:j], now, link,
                                OBJECT_WORKERS if calls[i].is_object else 1)  # fmt: skip
        last = max([last, *arrived])
        i = j
    return now, last


def _mbits(calls: Sequence[Call], side: str) -> float:
    return sum(getattr(c, side) for c in calls) * 8 / 1e6


def active_energy(link: Link, calls: Sequence[Call], seconds: float) -> float:
    """Joules of one active period: base power for its length plus the per-megabit terms."""
    radio = link.radio
    if radio is None:
        return 0.0
    return (radio.active_w * seconds + radio.up_w_per_mbps * _mbits(calls, "request")
            + radio.down_w_per_mbps * _mbits(calls, "response"))  # fmt: skip


class Timeline:
    """Rounds of one method on one population, replayed in order (node poll clocks carry
    over from round to round). Build one per method: every method starts at time 0 with
    the same seeded poll phases, so methods compare on equal terms."""

    def __init__(self, links: Mapping[int, Link], devices: Mapping[int, Device],
                 server: Device, *, transport: str = "flower", deadline: float | None = None,
                 seed: int = 0, clientapp_s: float = CLIENTAPP_S) -> None:  # fmt: skip
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: choose one of {', '.join(TRANSPORTS)}")
        self.links, self.devices, self.server = dict(links), dict(devices), server
        self.transport, self.deadline = transport, deadline
        self.clientapp_s = clientapp_s if transport == "flower" else 0.0
        self.now = 0.0
        rng = np.random.default_rng(derived_seed(seed, "timeline/poll-phase"))
        # When each node's poll cycle was last anchored (it polls at anchor + k * period):
        # nodes come up at unknown moments, so the first phase is a seeded draw.
        self.anchor = {p: -float(rng.uniform(0, self._period(self.links[p])))
                       for p in sorted(self.links)}  # fmt: skip
        self.last_active = {p: -math.inf for p in self.links}  # the radio's last byte

    # -- polling -----------------------------------------------------------------------
    @staticmethod
    def _empty_poll(link: Link, request: float) -> float:
        return request / link.uplink_bps + link.rtt_s + EMPTY_POLL_RESPONSE / link.downlink_bps

    def _period(self, link: Link, request: float = 850.0) -> float:
        return self._empty_poll(link, request) + NODE_POLL_S

    def _fetch_start(self, partition: int, link: Link, request: float, available: float
                     ) -> float:  # fmt: skip
        """When the poll that finds an instruction available at ``available`` starts."""
        if self.transport == "ideal":
            return available
        period = self._period(link, request)
        reach = request / link.uplink_bps + link.rtt_s / 2  # the request's way to the SuperLink
        anchor = self.anchor[partition]
        k = max(0, math.ceil((available - reach - anchor) / period - 1e-12))
        return anchor + k * period

    # -- one round ---------------------------------------------------------------------
    def round(self, inputs: RoundInput) -> RoundTiming:
        """Replay one round: its clients, then the server's aggregation and evaluation."""
        timing = self.start_round(inputs.round, inputs.clients)
        self.finish_round(timing, inputs.server_flops)
        return timing

    def cutoff(self, start: float) -> float:
        """The last moment a reply can reach the server and count (Flower's ServerApp pulls
        every SERVER_POLL_S while the deadline has not passed; a reply after its last pull
        is never seen)."""
        if self.deadline is None:
            return math.inf
        if self.transport == "ideal":
            return start + self.deadline
        pulls = max(1, math.ceil(self.deadline / SERVER_POLL_S - 1e-12))
        return start + SERVER_POLL_S * (pulls - 1)

    def start_round(self, number: int, clients: Sequence[ClientRound]) -> RoundTiming:
        """The clients' part of a round, from now: who finished when, which replies count,
        when the server has them. ``finish_round`` adds the server's work."""
        start = self.now
        timings = [self._client(c, start) for c in clients]
        cutoff = self.cutoff(start)
        for t in timings:
            t.counted = t.arrived <= cutoff
        arrivals = [t.arrived for t in timings if t.counted]
        everyone = all(t.counted for t in timings)
        last = max(arrivals, default=start)
        if self.transport == "flower":
            if everyone:  # the first pull at or after the last reply
                end = start + SERVER_POLL_S * max(0, math.ceil((last - start) / SERVER_POLL_S
                                                                - 1e-12))  # fmt: skip
            else:  # the ServerApp waits out the deadline: its last sleep passes it
                end = cutoff + SERVER_POLL_S
        else:
            end = last if everyone else cutoff
        if math.isinf(end):  # a reply never came and no deadline: the round never ends
            raise ValueError(f"round {number}: a client never replied and there is no "
                             "deadline, so the round never ends (give --round-deadline)")
        return RoundTiming(number, start, end, end, timings)

    def finish_round(self, timing: RoundTiming, server_flops: int) -> None:
        """The server aggregates and evaluates; the next round starts after it."""
        timing.next_start = timing.end + server_flops / self.server.flops_per_s
        self.now = timing.next_start

    def _client(self, c: ClientRound, available: float) -> ClientTiming:
        link, device = self.links[c.partition], self.devices[c.partition]
        radio = link.radio
        request = c.down[0].request if c.down else 850.0
        fetched = self._fetch_start(c.partition, link, request, available)
        radio_j = 0.0
        # Promotion if the radio went idle since its last byte (polls every NODE_POLL_S keep
        # a radio with a longer tail awake; the ideal transport has no polls).
        idle_since = (fetched - self._period(link, request) + self._empty_poll(link, request)
                      if self.transport == "flower" else self.last_active[c.partition])
        if radio is not None and radio.promotion_s and fetched - idle_since > radio.tail_s:
            radio_j += radio.promotion_s * radio.promotion_w
            fetched += radio.promotion_s
        downloaded, _ = message_transfer(c.down, fetched, link)
        radio_j += active_energy(link, c.down, downloaded - fetched)
        if c.status == "none" or c.status == "late" and not c.up:
            # No reply reached the server (or the record has none): it never arrives.
            computed = downloaded + self.clientapp_s + c.train_flops / device.flops_per_s
            self.anchor[c.partition] = computed  # it polls again after its attempt
            self.last_active[c.partition] = downloaded
            if radio is not None:
                radio_j += radio.tail_energy(math.inf)
            compute_j = (device.power_w or 0.0) * c.train_flops / device.flops_per_s
            return ClientTiming(c.partition, fetched, downloaded, computed, math.inf,
                                computed, False, radio_j, compute_j)  # fmt: skip
        computed = downloaded + self.clientapp_s + c.train_flops / device.flops_per_s
        push = computed
        if c.work_s is not None:
            computed = push = downloaded + c.work_s
        elif self.transport == "flower":
            push = downloaded + REPLY_POLL_S * math.ceil((computed - downloaded) / REPLY_POLL_S
                                                         - 1e-12)  # fmt: skip
        if radio is not None:
            gap = push - downloaded
            radio_j += radio.tail_energy(gap)
            if gap > radio.tail_s and radio.promotion_s:
                radio_j += radio.promotion_s * radio.promotion_w
                push += radio.promotion_s
        finished, arrived = message_transfer(c.up, push, link)
        radio_j += active_energy(link, c.up, finished - push)
        if radio is not None:
            radio_j += radio.tail_energy(math.inf)
        self.anchor[c.partition] = finished  # it polls again at once
        self.last_active[c.partition] = finished
        compute_j = (device.power_w or 0.0) * c.train_flops / device.flops_per_s
        return ClientTiming(c.partition, fetched, downloaded, computed, arrived, finished,
                            True, radio_j, compute_j)  # fmt: skip
