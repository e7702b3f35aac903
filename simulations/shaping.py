"""Link shaping for a real deployment on loopback: each SuperNode behind an emulated link.

``simulations.deploy --link PROFILE`` puts every SuperNode's traffic through its own link, so
the time model (``pemn_fl.timeline``) can be checked against real Flower processes: the
byte-counting proxy (``simulations.wireproxy``) gives each node a port of its own and, per
node and direction, a ``Direction``: a bottleneck of the link's rate, shared round-robin by
the node's connections (Flower's two object threads split it equally), then the one-way
propagation delay (half the round trip). A request thus reaches the SuperLink its size over
the uplink rate plus half a round trip after the node sent it, and its response reaches the
node its size over the downlink rate plus half a round trip after the SuperLink answered:
the model's rule, here imposed on real bytes.

``tc netem`` would shape the kernel's loopback instead, but it needs privileges this
machine's containers do not grant and cannot tell the nodes apart on one interface; the
proxy already sits on every node's path and knows which node a connection serves.

``shaped_links`` draws each node's link as the time model draws it.

Not emulated: a radio's promotion delay (under Flower's polling every 3 s a cellular radio
never goes idle, so the model charges none either) and packet loss.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pemn_fl.config import RunSettings

CHUNK = 16384  # bytes a connection sends before the next one gets its turn


@dataclass
class Direction:
    """One direction of one node's link: ``rate`` bytes/s shared round-robin, ``delay`` s."""

    rate: float
    delay: float
    queues: dict[int, deque] = field(default_factory=dict)  # connection -> chunks to send
    free_at: float = 0.0  # when the bottleneck finishes what it was given
    pumping: bool = False

    def submit(self, loop: asyncio.AbstractEventLoop, connection: int, data: bytes,
               deliver: Callable[[bytes], None]) -> None:  # fmt: skip
        """Queue ``data`` of ``connection``; ``deliver`` gets it (in pieces) once it has
        crossed the bottleneck and the delay. ``data`` empty: deliver the close after the
        data before it (``deliver(b"")``)."""
        queue = self.queues.setdefault(connection, deque())
        if not data:
            queue.append((b"", deliver))
        for start in range(0, len(data), CHUNK):
            queue.append((data[start:start + CHUNK], deliver))
        if not self.pumping:
            self.pumping = True
            loop.create_task(self._pump(loop))

    async def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = max(loop.time(), self.free_at)
        try:
            while any(self.queues.values()):
                for connection in list(self.queues):
                    queue = self.queues[connection]
                    if not queue:
                        del self.queues[connection]
                        continue
                    chunk, deliver = queue.popleft()
                    clock += len(chunk) / self.rate
                    wait = clock - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    # A close (b"") goes just after the data before it: timers due at the
                    # same instant run in no guaranteed order.
                    at = clock + self.delay + (0.0 if chunk else 1e-3)
                    loop.call_at(at, deliver, chunk)
        finally:
            self.free_at = clock
            self.pumping = False


@dataclass
class NodeLink:
    """A node's emulated link: its uplink (node -> SuperLink) and downlink directions."""

    up: Direction
    down: Direction

    @classmethod
    def of(cls, uplink_mbps: float, downlink_mbps: float, rtt_ms: float) -> NodeLink:
        one_way = rtt_ms / 1000 / 2
        return cls(Direction(uplink_mbps * 1e6 / 8, one_way),
                   Direction(downlink_mbps * 1e6 / 8, one_way))  # fmt: skip


def shaped_links(settings: RunSettings, nodes: int) -> list[NodeLink] | None:
    """With ``--link``, each node's emulated link (``simulations.shaping``), drawn as the time
    model draws it (same profiles, same seed), so the model and the deployment agree on who
    has which link."""
    if not settings.link:
        return None
    from pemn_fl.profiles import population

    drawn = population(settings.link, settings.client_device, list(range(nodes)), settings.seed)
    return [NodeLink.of(link.uplink_mbps, link.downlink_mbps, link.rtt_ms)
            for link in (drawn.links[i] for i in range(nodes))]  # fmt: skip
