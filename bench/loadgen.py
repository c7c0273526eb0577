"""The client side of the benchmark: WebSocket and HTTP clients and the load patterns.

The load generator shares the machine's two cores with the server it measures, so every
message it handles must be cheap. The default WebSocket client is `picows` (Cython frame
parser and masking, callback API, no task per message); `--client websockets` uses the
`websockets` asyncio client (compression off) instead, for comparison or where picows is not
installed. The HTTP client is a minimal HTTP/1.1 keep-alive client on an asyncio protocol
(Content-Length bodies only), because a full client costs more CPU per request than the
server's own handler does.

Every pattern here is bounded: by a count, a deadline, or both.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

try:  # the efficient client; optional so the bench still runs on `websockets` alone
    import picows
except ImportError:  # pragma: no cover - depends on the environment
    picows = None

CLIENTS = ("picows", "websockets")
now = time.perf_counter


def default_client() -> str:
    return "picows" if picows is not None else "websockets"


# --------------------------------------------------------------------------- WebSocket


class Ws:
    """One open WebSocket, greeted. `on_message(bytes)` is called for every text frame."""

    greeting: dict[str, Any]
    close_code: int | None = None

    def __init__(self) -> None:
        self.on_message: Callable[[bytes], None] = _ignore
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _ignore(data: bytes) -> None:
    pass


if picows is not None:

    class _PicowsListener(picows.WSListener):
        def __init__(self, conn: _PicowsWs) -> None:
            super().__init__()
            self.conn = conn

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            kind = frame.msg_type
            if kind == picows.WSMsgType.TEXT or kind == picows.WSMsgType.BINARY:
                self.conn._deliver(frame.get_payload_as_bytes())
            elif kind == picows.WSMsgType.CLOSE:
                self.conn.close_code = frame.get_close_code()
                if not transport.is_close_frame_sent:
                    transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
            if not self.conn.closed.done():
                self.conn.closed.set_result(None)


class _PicowsWs(Ws):
    def __init__(self) -> None:
        super().__init__()
        self.transport: Any = None
        self._greeted: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def _deliver(self, data: bytes) -> None:
        if not self._greeted.done():
            self._greeted.set_result(data)
        else:
            self.on_message(data)

    def send(self, data: bytes) -> None:
        self.transport.send(picows.WSMsgType.TEXT, data)

    async def close(self) -> None:
        """The close handshake: send 1000, wait (bounded) for the server's close frame."""
        if self.transport is not None and not self.closed.done():
            self.transport.send_close(picows.WSCloseCode.OK)
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                self.transport.disconnect()

    @classmethod
    async def open(cls, url: str, timeout: float) -> _PicowsWs:
        conn = cls()
        transport, _ = await picows.ws_connect(
            lambda: _PicowsListener(conn),
            url,
            websocket_handshake_timeout=timeout,
            read_buffer_init_size=2048,
        )
        conn.transport = transport
        try:
            conn.greeting = orjson.loads(await asyncio.wait_for(conn._greeted, timeout))
        except BaseException:
            transport.disconnect()
            raise
        return conn


class _WebsocketsWs(Ws):
    """The `websockets` client: a reader task per socket, a task per send."""

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        self._loop.create_task(self._send(data))

    async def _send(self, data: bytes) -> None:
        try:
            await self.ws.send(data.decode())
        except Exception:  # noqa: BLE001 - a closed socket shows up as `closed`
            pass

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.on_message(raw.encode() if isinstance(raw, str) else raw)
        except Exception:  # noqa: BLE001
            pass
        finally:
            self.close_code = self.ws.close_code
            if not self.closed.done():
                self.closed.set_result(None)

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=2)

    @classmethod
    async def open(cls, url: str, timeout: float) -> _WebsocketsWs:
        from websockets.asyncio.client import connect

        ws = await connect(
            url, compression=None, open_timeout=timeout, close_timeout=2, ping_interval=None
        )
        conn = cls(ws)
        try:
            conn.greeting = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        except BaseException:
            await ws.close()
            raise
        conn._reader = asyncio.get_running_loop().create_task(conn._read())
        return conn


async def open_ws(url: str, client: str, timeout: float = 10.0) -> Ws:
    """Connect and wait for the greeting (`Ws.greeting`)."""
    if client == "picows":
        if picows is None:
            raise RuntimeError("no picows: pip install picows, or use --client websockets")
        return await _PicowsWs.open(url, timeout)
    return await _WebsocketsWs.open(url, timeout)


# --------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    pass


class _HttpProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(HttpError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        if b"\r\nconnection: close" in head:
            self.lost = True
        waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))


class HttpConn:
    """One keep-alive HTTP/1.1 connection, one request at a time; reconnects when closed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._proto: _HttpProtocol | None = None
        self._host_header = f"{host}:{port}".encode()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        proto = self._proto
        if proto is None or proto.lost:
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_HttpProtocol, self.host, self.port)
            self._proto = proto
        payload = b"" if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        head = [
            f"{method} {path} HTTP/1.1".encode(),
            b"Host: " + self._host_header,
            b"Content-Length: " + str(len(payload)).encode(),
        ]
        if body is not None:
            head.append(b"Content-Type: application/json")
        if token:
            head.append(b"Authorization: Bearer " + token.encode())
        proto.waiter = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        try:
            return await asyncio.wait_for(proto.waiter, timeout)
        except BaseException:
            self.close()
            raise

    async def json(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """A request that must succeed (HTTP 200); returns the decoded body."""
        status, raw = await self.request(method, path, body, token)
        if status != 200:
            raise HttpError(f"{method} {path} -> {status} {raw[:300]!r}")
        return orjson.loads(raw)

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


async def for_each(
    count: int, concurrency: int, make_conn: Callable[[], Any], job: Callable[..., Any]
) -> list[Any]:
    """`await job(conn, i)` for i in range(count), `concurrency` workers each with its own
    `make_conn()` connection (closed at the end); results in order of i."""
    results: list[Any] = [None] * count
    cursor = iter(range(count))
    conns = [make_conn() for _ in range(max(1, min(concurrency, count)))]

    async def worker(conn: Any) -> None:
        for index in cursor:
            results[index] = await job(conn, index)

    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()
    return results


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Iterable[float], points: Sequence[float] = (50, 90, 99)) -> dict:
    """p50/p90/p99/max in milliseconds, rounded to microseconds."""
    values = sorted(seconds)
    out: dict[str, Any] = {"n": len(values)}
    for q in points:
        v = percentile(values, q)
        out[f"p{q:g}_ms"] = None if v is None else round(v * 1000, 3)
    out["max_ms"] = round(values[-1] * 1000, 3) if values else None
    return out


# --------------------------------------------------------------------------- load patterns


@dataclass
class PairConn:
    """A paired host and client, both connected."""

    host: Ws
    client: Ws


def command_frame(req_id: str, sent_at: float | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "command", "cmd": "GET_SIMS", "req_id": req_id}
    if sent_at is not None:
        frame["t"] = sent_at
    return orjson.dumps(frame)


def event_frame(req_id: str, sent_at: float | None = None) -> bytes:
    frame: dict[str, Any] = {
        "type": "event",
        "event": "SIM_INFO",
        "sims": [{"slot": 1, "carrier": "CHT"}],
        "req_id": req_id,
    }
    if sent_at is not None:
        frame["t"] = sent_at
    return orjson.dumps(frame)


@dataclass
class RoundTrips:
    """Closed loop: each pair keeps `window` commands in flight; hosts answer each command
    with an event carrying the same `req_id`; every answer releases the next command.

    `limit` (round trips) stops issuing once that many commands were sent in total.
    """

    pairs: list[PairConn]
    window: int
    limit: int | None = None
    issued: int = 0
    completed: int = 0
    errors: int = 0
    recording: bool = False
    rtts: list[float] = field(default_factory=list)
    running: bool = True
    error_examples: list[bytes] = field(default_factory=list)
    _sent: dict[str, float] = field(default_factory=dict)
    _seq: int = 0
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        for index, pair in enumerate(self.pairs):
            pair.host.on_message = self._host_handler(pair.host)
            pair.client.on_message = self._client_handler(pair.client, index)
        for index, pair in enumerate(self.pairs):
            for _ in range(self.window):
                self._issue(pair.client, index)

    def _issue(self, client: Ws, index: int) -> None:
        if not self.running or (self.limit is not None and self.issued >= self.limit):
            if not self._sent:
                self._drained.set()
            return
        self._seq += 1
        req_id = f"{index}.{self._seq}"
        self._sent[req_id] = now()
        self.issued += 1
        client.send(command_frame(req_id))

    def _host_handler(self, host: Ws) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            frame = orjson.loads(data)
            if frame.get("type") == "command":
                host.send(event_frame(frame["req_id"]))
            else:
                self._error(data)

        return on_message

    def _client_handler(self, client: Ws, index: int) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            frame = orjson.loads(data)
            if frame.get("type") == "presence":  # a `since` socket hears its host come and go
                return
            sent = self._sent.pop(frame.get("req_id"), None)
            if sent is None or frame.get("type") != "event":
                self._error(data)
                return
            self.completed += 1
            if self.recording:
                self.rtts.append(now() - sent)
            self._issue(client, index)

        return on_message

    def _error(self, data: bytes) -> None:
        self.errors += 1
        if len(self.error_examples) < 3:
            self.error_examples.append(data[:200])

    async def drain(self, timeout: float) -> int:
        """Stop issuing and wait (bounded) for the commands in flight; returns those lost."""
        self.running = False
        if self._sent:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                pass
        return len(self._sent)

    async def until_done(self, timeout: float) -> bool:
        """With a `limit`: wait (bounded) until every command was issued and answered."""
        deadline = now() + timeout
        while now() < deadline:
            if self.limit is not None and self.issued >= self.limit and not self._sent:
                return True
            await asyncio.sleep(0.01)
        return False


@dataclass
class Paced:
    """Open loop: commands at a fixed rate, round-robin over the pairs, whatever the replies.

    Each command and each event carries its send time (`t`), so both one-way latencies are
    measured (host and client live in this process, on one clock), plus the round trip.
    `samples` holds (sent_at, one_way_seconds) for every relayed message received.
    """

    pairs: list[PairConn]
    commands_per_second: float
    sent: int = 0
    answered: int = 0
    errors: int = 0
    max_lag: float = 0.0
    stop_requested: bool = False
    error_examples: list[bytes] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)
    rtts: list[tuple[float, float]] = field(default_factory=list)
    _pending: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, pair in enumerate(self.pairs):
            pair.host.on_message = self._host_handler(pair.host)
            pair.client.on_message = self._client_handler(index)

    def _host_handler(self, host: Ws) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            arrived = now()
            frame = orjson.loads(data)
            if frame.get("type") != "command":
                self._error(data)
                return
            self.samples.append((frame["t"], arrived - frame["t"]))
            host.send(event_frame(frame["req_id"], now()))

        return on_message

    def _client_handler(self, index: int) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            arrived = now()
            frame = orjson.loads(data)
            if frame.get("type") == "presence":  # a `since` socket hears its host come and go
                return
            sent = self._pending.pop(frame.get("req_id"), None)
            if sent is None or frame.get("type") != "event":
                self._error(data)
                return
            self.answered += 1
            self.samples.append((frame["t"], arrived - frame["t"]))
            self.rtts.append((sent, arrived - sent))

        return on_message

    def _error(self, data: bytes) -> None:
        self.errors += 1
        if len(self.error_examples) < 3:
            self.error_examples.append(data[:200])

    async def run(self, seconds: float) -> None:
        """Send `commands_per_second × seconds` commands on schedule (1 ms ticks), or fewer
        if `stop_requested` is set meanwhile."""
        total = int(self.commands_per_second * seconds)
        start = now()
        pairs = len(self.pairs)
        while self.sent < total and not self.stop_requested:
            elapsed = now() - start
            due = min(total, int(elapsed * self.commands_per_second) + 1)
            while self.sent < due:
                scheduled = start + self.sent / self.commands_per_second
                sent_at = now()
                self.max_lag = max(self.max_lag, sent_at - scheduled)
                req_id = f"p{self.sent}"
                self._pending[req_id] = sent_at
                self.pairs[self.sent % pairs].client.send(command_frame(req_id, sent_at))
                self.sent += 1
            await asyncio.sleep(0.001)

    async def settle(self, timeout: float) -> int:
        """Wait (bounded) for the answers still in flight; returns the number lost."""
        deadline = now() + timeout
        while self._pending and now() < deadline:
            await asyncio.sleep(0.01)
        return len(self._pending)

    def one_way(self, since: float = 0.0, until: float = math.inf) -> list[float]:
        return [lat for sent, lat in self.samples if since <= sent < until]

    def round_trips(self, since: float = 0.0, until: float = math.inf) -> list[float]:
        return [lat for sent, lat in self.rtts if since <= sent < until]
