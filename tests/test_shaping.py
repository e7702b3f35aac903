"""Link shaping in the proxy: each node's bytes cross its own emulated link.

Real sockets on 127.0.0.1, a real proxy. Only lower bounds on time are asserted tightly (a
loaded machine makes a transfer slower, never faster than its link allows); the upper
bounds are loose.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from simulations.shaping import NodeLink
from simulations.wireproxy import WireProxy


class Echo:
    """A TCP server on loopback that reads a whole request (a 4-byte length, then that many
    bytes) before it answers with as many bytes, as an HTTP server does."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            head = b""
            while len(head) < 4:
                head += conn.recv(4 - len(head))
            size, got = int.from_bytes(head, "big"), 0
            while got < size:
                got += len(conn.recv(65536))
            conn.sendall(b"y" * size)


def _round_trip(port: int, size: int) -> float:
    """Send ``size`` bytes through the proxy, read them back; seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(size.to_bytes(4, "big") + b"x" * size)
        got = 0
        while got < size:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed early"
            got += len(chunk)
    return time.monotonic() - started


@pytest.fixture
def echo() -> Echo:
    server = Echo()
    yield server
    server.sock.close()


def test_a_node_link_costs_its_bytes_at_each_rate_and_a_round_trip(echo: Echo) -> None:
    # Node 0: 0.8 Mbps up (100 KB/s), 1.6 Mbps down (200 KB/s), 200 ms round trip.
    # Node 1: unshaped for comparison (a fast link).
    links = [NodeLink.of(0.8, 1.6, 200), NodeLink.of(1000, 1000, 0.1)]
    proxy = WireProxy(echo.port, None, links=links).start()
    try:
        assert proxy.port_for(0) != proxy.port_for(1) != proxy.listen_port
        slow = _round_trip(proxy.port_for(0), 50_000)
        fast = _round_trip(proxy.port_for(1), 50_000)
    finally:
        proxy.stop()
    # 50 KB up at 100 KB/s (0.5 s), back down at 200 KB/s (0.25 s), one round trip (0.2 s).
    assert slow >= 0.5 + 0.25 + 0.2 - 0.05
    assert slow < 0.95 + 2.0
    assert fast < slow / 3


def test_two_connections_of_one_node_share_its_bandwidth(echo: Echo) -> None:
    links = [NodeLink.of(0.8, 80, 0)]  # 100 KB/s up: the bottleneck
    proxy = WireProxy(echo.port, None, links=links).start()
    start = threading.Barrier(3)
    ends: list[float] = []

    def send() -> None:
        start.wait(30)
        _round_trip(proxy.port_for(0), 40_000)
        ends.append(time.monotonic())

    try:
        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        start.wait(30)
        began = time.monotonic()
        for t in threads:
            t.join(30)
    finally:
        proxy.stop()
    # 2 x 40 KB through one 100 KB/s uplink: the last one done after ~0.8 s, whoever starts
    # first (a slow machine only delays them), not the 0.4 s each would take alone.
    assert len(ends) == 2 and max(ends) - began >= 0.75
