"""A byte-counting proxy between SuperNodes and the SuperLink: the bytes on the wire, measured.

``simulations.deploy`` puts it on 127.0.0.1 between every ``flower-supernode`` and the
SuperLink. It lives beside the deploy script, not in ``pemn_fl``: the nodes download
``pemn_fl`` as the app bundle, and a node has no use for the proxy.

It measures at one of two levels (``level``), and the meter says which:

* ``http`` (a cleartext deployment): the Fleet API calls, parsed and attributed (below);
* ``tls`` (``simulations.deploy --secure``): TLS records it cannot read, so it counts the
  bytes of each direction (node to SuperLink, SuperLink to node) and parses nothing. Those
  totals cover everything the nodes and the SuperLink exchanged: handshakes, idle polling,
  the app bundle and every round, with no split between them.

Both levels also keep the raw per-direction totals and the number of TCP connections, so a
cleartext and a TLS run of the same settings compare like for like. When the SuperLink is
down, or dies mid-connection, the node's connection is reset, as it would be without the
proxy (a SuperNode retries a reset; a clean close mid-TLS-handshake makes it give up).

In Flower 1.42 a SuperNode speaks to the Fleet API in plain HTTP/1.1 (httpx,
keep-alive, one request at a time per connection): ``POST /v1/fleet/<call>`` with a protobuf
body and ~840 B of headers (the node's public key, a signature and a timestamp on every
request), answered by uvicorn. The proxy forwards every TCP byte unchanged and, on the way,
splits the two byte streams into request/response pairs so each byte is attributed to the
call it belongs to (headers and body, both directions), in one of these categories:

* ``downlink``: pulling an instruction (``pull-messages`` that returned one), its objects
  (``pull-object``) and confirming receipt (``confirm-message-received``);
* ``uplink``: pushing a reply (``push-messages``) and its objects (``push-object``);
* ``idle``: heartbeats and ``pull-messages`` polls that found nothing (every 3 s per node);
* ``bundle``: the app bundle download (``get-fab``);
* ``control``: registering/activating nodes, run information;
* ``unparsed``: bytes that were not HTTP/1.1 as expected (counted, never dropped).

A call is counted when its response is complete, *before* the response's last bytes are
forwarded: whatever the node (or, after it, the ServerApp) does in response is already in the
meter. The meter file (JSON, replaced atomically after every call) is what the ServerApp
reads at the end of each round (:class:`pemn_fl.accounting.WireMeter`); it also keeps, per
call type, the header sizes the transport model (:mod:`pemn_fl.transport`) is fitted to.

Not counted: TCP/IP headers (the kernel's, not payload). Under TLS the HTTP calls inside the
records are invisible: the ``tls`` level has no categories, only directions.

The HTTP parsing is by hand: ``h11`` (already installed with httpx) parses one side of a
connection, but a proxy needs both sides of the same exchange and the raw byte count of each
part, which h11 does not report; Content-Length and chunked bodies are all Flower uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from simulations.shaping import Direction, NodeLink

FLEET_PREFIX = "/v1/fleet/"
LEVELS = {
    "http": "cleartext HTTP/1.1, parsed into Fleet API calls (headers and bodies)",
    "tls": "TLS records, counted per direction, not parsed (TCP payload bytes)",
}
DIRECTIONS = ("node_to_link", "link_to_node")
CATEGORIES = ("uplink", "downlink", "idle", "bundle", "control", "unparsed")
UPLINK_CALLS = {"push-messages", "push-object"}
DOWNLINK_CALLS = {"pull-object", "confirm-message-received"}
IDLE_CALLS = {"send-node-heartbeat"}
BUNDLE_CALLS = {"get-fab"}


def category(call: str, response_body: bytes) -> str:
    """Which traffic a finished call was (see the module docstring)."""
    if call in UPLINK_CALLS:
        return "uplink"
    if call in DOWNLINK_CALLS:
        return "downlink"
    if call == "pull-messages":
        # An empty PullMessagesResponse serialises to 0 bytes: a poll that found nothing.
        return "downlink" if response_body else "idle"
    if call in IDLE_CALLS:
        return "idle"
    if call in BUNDLE_CALLS:
        return "bundle"
    return "control"


class HttpError(ValueError):
    """The bytes are not the HTTP/1.1 the proxy expects."""


@dataclass
class HttpMessage:
    """One parsed request or response: its first line, header and body sizes, its body."""

    start_line: str
    header_bytes: int  # start line + header lines + the blank line
    body: bytes
    wire_bytes: int  # everything it took on the wire (chunk framing included)
    length_digits: int = 0  # digits of its Content-Length value (they vary with the body)
    seen_at: float = 0.0  # when its last byte reached the proxy (time.time())

    @property
    def header_base(self) -> int:
        """Header bytes without the Content-Length digits: constant per call type."""
        return self.header_bytes - self.length_digits


def parse_http(buf: bytearray) -> HttpMessage | None:
    """Take one complete HTTP/1.1 message off the front of ``buf``; ``None`` if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise HttpError("no end of headers in 64 KiB")
        return None
    header_bytes = end + 4
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    if not (lines[0].startswith("HTTP/1.") or lines[0].endswith((" HTTP/1.1", " HTTP/1.0"))):
        raise HttpError(f"not an HTTP/1.x start line: {lines[0][:40]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pos, body = header_bytes, bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return None
            body += buf[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
            if size == 0:  # no trailers in Flower's responses; a trailer would be unparsed
                break
        wire = pos
    else:
        length = int(headers.get("content-length", "0"))
        if len(buf) < header_bytes + length:
            return None
        body = buf[header_bytes : header_bytes + length]
        wire = header_bytes + length
    digits = len(headers["content-length"]) if "content-length" in headers else 0
    message = HttpMessage(lines[0], header_bytes, bytes(body), wire, digits, time.time())
    del buf[:wire]
    return message


@dataclass
class Meter:
    """Totals by category; per call type, counts and sizes; written to ``path`` per call."""

    path: Path | None = None
    level: str = "http"
    bytes: Counter = field(default_factory=Counter)
    # Every byte by direction, at both levels (TCP payload as forwarded), and connections.
    directions: Counter = field(default_factory=Counter)
    connections: int = 0
    calls: Counter = field(default_factory=Counter)
    body_bytes: Counter = field(default_factory=Counter)
    # Header sizes per call type without the Content-Length digits (histograms: size ->
    # count), for the transport model.
    request_headers: dict = field(default_factory=lambda: defaultdict(Counter))
    response_headers: dict = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)
    # With a path: one JSON line per finished call (node, call, when its request left the
    # node and when its response left the SuperLink, as the proxy saw them, and sizes), for
    # checking the time model against a real deployment (``bench.time_validation``).
    calls_path: Path | None = None

    def add_raw(self, n: int, from_node: bool) -> None:
        """Count ``n`` bytes of one direction (not written to the file here: per read, that
        would be a file replace per TCP segment; ``write`` after each call and at the end)."""
        with self.lock:
            self.directions[DIRECTIONS[0] if from_node else DIRECTIONS[1]] += n

    def connected(self) -> None:
        with self.lock:
            self.connections += 1

    def add(self, cat: str, n: int) -> None:
        with self.lock:
            self.bytes[cat] += n
        self.write()

    def count(self, request: HttpMessage, response: HttpMessage, node: int = -1) -> None:
        parts = request.start_line.split(" ")
        path = parts[1] if len(parts) > 1 else ""
        call = path.removeprefix(FLEET_PREFIX) if path.startswith(FLEET_PREFIX) else path
        cat = category(call, response.body)
        with self.lock:
            self.bytes[cat] += request.wire_bytes + response.wire_bytes
            self.calls[call] += 1
            self.body_bytes[call] += len(request.body) + len(response.body)
            self.request_headers[call][request.header_base] += 1
            self.response_headers[call][response.header_base] += 1
            if self.calls_path is not None:
                line = {"node": node, "call": call, "category": cat,
                        "request_at": request.seen_at, "response_at": response.seen_at,
                        "request_bytes": request.wire_bytes,
                        "response_bytes": response.wire_bytes}  # fmt: skip
                with self.calls_path.open("a") as handle:
                    handle.write(json.dumps(line) + "\n")
        self.write()

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "level": self.level,
                "level_means": LEVELS[self.level],
                "bytes": {c: int(self.bytes[c]) for c in CATEGORIES},
                "directions": {d: int(self.directions[d]) for d in DIRECTIONS},
                "connections": self.connections,
                "calls": dict(self.calls),
                "body_bytes": dict(self.body_bytes),
                "request_header_base": {k: dict(v) for k, v in self.request_headers.items()},
                "response_header_base": {k: dict(v) for k, v in self.response_headers.items()},
            }

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.path)  # readers never see half a file


class Exchange:
    """One node connection: requests queue up from the node, responses answer them in order."""

    def __init__(self, meter: Meter, node: int = -1) -> None:
        self.meter, self.node = meter, node
        self.from_node, self.from_link = bytearray(), bytearray()
        self.pending: list[HttpMessage] = []
        self.broken = False

    def feed(self, data: bytes, from_node: bool) -> None:
        """Count ``data`` (just read from one side) before it is forwarded to the other."""
        if self.broken:
            self.meter.add("unparsed", len(data))
            return
        buf = self.from_node if from_node else self.from_link
        buf += data
        try:
            while (message := parse_http(buf)) is not None:
                if from_node:
                    self.pending.append(message)
                elif not self.pending:
                    raise HttpError("a response with no request")
                else:
                    self.meter.count(self.pending.pop(0), message, self.node)
        except (HttpError, ValueError) as exc:
            self.broken = True
            left = len(self.from_node) + len(self.from_link)
            left += sum(m.wire_bytes for m in self.pending)
            self.from_node.clear()
            self.from_link.clear()
            self.pending.clear()
            self.meter.add("unparsed", left)
            print(f"wire proxy: not HTTP/1.1 as expected ({exc}); counting raw bytes")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), not a clean close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class WireProxy:
    """Listen on ``127.0.0.1:<free port>``, forward to ``127.0.0.1:target_port``, count.

    ``level`` is ``http`` (parse the cleartext calls) or ``tls`` (count each direction's
    bytes, parse nothing: TLS cannot be parsed, and trying would only mark it unparsed).
    Runs its asyncio loop in a daemon thread so the deploy command keeps its own flow;
    ``start()`` returns once the port is open, ``stop()`` closes every connection. The
    target may go away and come back (a SuperLink restart): each node connection dials it
    anew, and the meter keeps counting across.
    """

    def __init__(self, target_port: int, meter_path: Path | None, level: str = "http",
                 links: list[NodeLink] | None = None,
                 calls_path: Path | None = None) -> None:  # fmt: skip
        if level not in LEVELS:
            raise ValueError(f"level {level!r}: one of {', '.join(LEVELS)}")
        self.target_port = target_port
        self.listen_port = 0
        # With ``links`` (``simulations.shaping``): node i connects to ``listen_ports[i]``
        # and its traffic crosses its own emulated link.
        self.links = links
        self.listen_ports: list[int] = []
        self.meter = Meter(path=meter_path, level=level, calls_path=calls_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None

    def port_for(self, node: int) -> int:
        """The port node ``node`` connects to (its own when links are shaped)."""
        return self.listen_ports[node] if 0 <= node < len(self.listen_ports) else self.listen_port

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    exchange: Exchange | None, from_node: bool,
                    shaped: Direction | None = None) -> None:  # fmt: skip
        reset, connection = False, id(writer)
        loop = asyncio.get_running_loop()

        def deliver(chunk: bytes) -> None:  # the far side of an emulated link
            if chunk:
                writer.write(chunk)
            else:
                with contextlib.suppress(Exception):
                    writer.close()

        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionResetError:
                    reset = True  # the peer died: the other side sees a reset too
                    break
                if not data:
                    break  # a clean close, passed on as one
                self.meter.add_raw(len(data), from_node)  # counted first, then forwarded
                if exchange is not None:
                    exchange.feed(data, from_node)
                if shaped is not None:
                    shaped.submit(loop, connection, data, deliver)
                else:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if reset:
                _reset(writer)
            elif shaped is not None:
                shaped.submit(loop, connection, b"", deliver)  # the close, after the data
            else:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _handle(self, node_reader: asyncio.StreamReader,
                      node_writer: asyncio.StreamWriter, node: int = -1) -> None:  # fmt: skip
        try:
            link_reader, link_writer = await asyncio.open_connection("127.0.0.1",
                                                                     self.target_port)
        except OSError:
            # Nobody listens there (a SuperLink that is down or restarting): the node must
            # see what it would see without the proxy, a refused connection, which it
            # retries; a clean close would read as a broken TLS handshake, which Flower's
            # SuperNode gives up on.
            _reset(node_writer)
            return
        self.meter.connected()
        exchange = Exchange(self.meter, node) if self.meter.level == "http" else None
        link = self.links[node] if self.links and node >= 0 else None
        await asyncio.gather(
            self._pipe(node_reader, link_writer, exchange, True, link and link.up),
            self._pipe(link_reader, node_writer, exchange, False, link and link.down),
            return_exceptions=True)  # fmt: skip

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)  # loopback only
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._shaped_servers = []
        for node in range(len(self.links or [])):  # one port per node, its own link

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             node: int = node) -> None:  # fmt: skip
                await self._handle(reader, writer, node)

            server = self._loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
            self._shaped_servers.append(server)
            self.listen_ports.append(server.sockets[0].getsockname()[1])
        self.meter.write()
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> WireProxy:
        self._thread = threading.Thread(target=self._run, name="wire-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the wire proxy could not listen on 127.0.0.1")
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return

        async def _close() -> None:
            self._server.close()
            for server in getattr(self, "_shaped_servers", []):
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.meter.write()
