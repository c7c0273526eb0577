"""Helpers the tests share: a live server, accounts, devices, pairings, sockets."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import os
import socket as socket_module
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from simbridge.app import create_app
from simbridge.config import Settings
from simbridge.runtime import Runtime
from simbridge.web.context import SimBridgeApp
from tests.processes import ServerProcess

RECV_TIMEOUT = 5.0
POLL_SECONDS = 5.0
PASSWORD = "secret123"  # every test account's, unless a test says otherwise


@dataclass
class LiveServer:
    app: SimBridgeApp
    url: str
    ws_url: str

    @classmethod
    @asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[LiveServer]:
        """Serve `create_app(settings)` on 127.0.0.1 and a free port, in this event loop."""
        app = create_app(settings)
        listener = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))  # a free port, chosen by the OS and held from now on
        port = listener.getsockname()[1]
        server = await app.create_server(
            sock=listener, return_asyncio_server=True, access_log=False
        )
        assert server is not None
        await server.startup()
        await server.before_start()
        await server.after_start()
        try:
            yield cls(app, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
        finally:
            await server.before_stop()
            await server.close()
            await server.after_stop()

    @property
    def runtime(self) -> Runtime:
        """The server's services, started."""
        return self.app.ctx.runtime


@dataclass
class Account:
    username: str
    password: str
    user_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class Device:
    id: int
    type: str
    owner: Account


@dataclass
class Pair:
    host: Device
    client: Device
    pairing_id: int


def bearer(token: str | None) -> dict[str, str]:
    """The `Authorization` header that carries `token`; no header at all for None."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# --- servers with other settings --------------------------------------------------------------
@dataclass
class Served:
    live: LiveServer
    http: httpx.AsyncClient


@dataclass
class PairedWorld(Served):
    pair: Pair  # alice's host and client


@asynccontextmanager
async def serving(settings: Settings, **changes: Any) -> AsyncIterator[Served]:
    """A server with `settings` changed by `changes` (same ManualClock), and an httpx client
    bound to it; for tests whose settings differ from the `server` fixture's."""
    async with LiveServer.running(replace(settings, **changes)) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
            yield Served(live, http)


@asynccontextmanager
async def paired_world(settings: Settings, **changes: Any) -> AsyncIterator[PairedWorld]:
    """`serving`, with alice and her paired host and client (what the `pair` fixture gives)."""
    async with serving(settings, **changes) as served:
        alice = await make_account(served.http, "alice")
        yield PairedWorld(served.live, served.http, await make_pair(served.http, alice))


# --- database statements ---------------------------------------------------------------------
class _Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "%s: %s" and isinstance(record.args, tuple):  # (statement, parameters)
            self.sent.append(str(record.args[0]))


@contextmanager
def statements_sent() -> Iterator[list[str]]:
    """Every SQL statement Tortoise sends (to any database) meanwhile, as it logs them at DEBUG
    on `tortoise.db_client`. (The SQLite log store's own connection is not Tortoise's.)"""
    logger = logging.getLogger("tortoise.db_client")
    handler, level = _Statements(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.sent
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- accounts, devices, pairings --------------------------------------------------------------
async def register(
    http: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await http.post("/auth/register", json={"username": username, "password": password})


async def login(
    http: httpx.AsyncClient,
    username: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.post(
        "/auth/login", json={"username": username, "password": password}, headers=headers
    )


async def make_account(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> Account:
    registered = await register(http, username, password)
    assert registered.status_code == 200, registered.text
    logged_in = await login(http, username, password)
    assert logged_in.status_code == 200, logged_in.text
    body = logged_in.json()
    return Account(username, password, body["user_id"], body["token"])


async def make_device_with_token(
    http: httpx.AsyncClient, owner: Account, kind: str, name: str = ""
) -> tuple[Device, str]:
    """A new device of `owner`, and its device token (shown only in this reply)."""
    reply = await http.post(
        "/devices",
        json={"name": name or f"{owner.username}-{kind}", "type": kind},
        headers=owner.headers,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return Device(body["id"], kind, owner), body["device_token"]


async def make_device(http: httpx.AsyncClient, owner: Account, kind: str, name: str = "") -> Device:
    device, _ = await make_device_with_token(http, owner, kind, name)
    return device


async def pairing_code(http: httpx.AsyncClient, owner: Account, host: Device) -> str:
    reply = await http.post(f"/pair?host_device_id={host.id}", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["code"])


async def confirm_code(
    http: httpx.AsyncClient, owner: Account, code: str, client: Device | int
) -> httpx.Response:
    """`POST /pair/confirm` as `owner`, for `client` (a device, or just an id)."""
    client_id = client.id if isinstance(client, Device) else client
    return await http.post(
        "/pair/confirm", json={"code": code, "client_device_id": client_id}, headers=owner.headers
    )


async def pair_devices(
    http: httpx.AsyncClient, owner: Account, host: Device, client: Device
) -> Pair:
    reply = await confirm_code(http, owner, await pairing_code(http, owner, host), client)
    assert reply.status_code == 200, reply.text
    return Pair(host, client, reply.json()["pairing_id"])


async def make_pair(http: httpx.AsyncClient, owner: Account) -> Pair:
    """A new host and a new client of `owner`, paired."""
    host = await make_device(http, owner, "host")
    client = await make_device(http, owner, "client")
    return await pair_devices(http, owner, host, client)


async def list_devices(http: httpx.AsyncClient, owner: Account) -> list[dict[str, Any]]:
    """`GET /devices` as `owner`."""
    reply = await http.get("/devices", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    devices = reply.json()
    assert isinstance(devices, list), devices
    return devices


async def device_row(http: httpx.AsyncClient, device: Device) -> dict[str, Any]:
    """The `GET /devices` entry of `device`, as its owner sees it."""
    rows = [row for row in await list_devices(http, device.owner) if row["id"] == device.id]
    assert len(rows) == 1, rows
    return rows[0]


async def is_online(http: httpx.AsyncClient, device: Device) -> bool:
    return bool((await device_row(http, device))["is_online"])


async def is_offline(http: httpx.AsyncClient, device: Device) -> bool:
    return not await is_online(http, device)


async def eventually(check: Callable[[], Any], timeout: float = POLL_SECONDS) -> bool:
    """Poll `check()` (awaiting what it returns, when awaitable) until it is true (True) or
    `timeout` seconds have passed (False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:  # until true or the deadline
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)


HISTORY_FIELDS = {"id", "from_device_id", "to_device_id", "msg_type", "payload", "created_at"}


async def history(
    http: httpx.AsyncClient, owner: Account, device: Device, limit: int | None = None
) -> list[dict[str, Any]]:
    """`GET /history` of `device` as `owner`: its rows, each of the contract's shape."""
    params = {"device_id": device.id} if limit is None else {"device_id": device.id, "limit": limit}
    reply = await http.get("/history", params=params, headers=owner.headers)
    assert reply.status_code == 200, reply.text
    rows = reply.json()
    assert isinstance(rows, list), rows
    for row in rows:
        assert set(row) == HISTORY_FIELDS, row
        datetime.fromisoformat(row["created_at"])
    return rows


# --- error replies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """What a caller learns from one attempt: status, content type and body (the JSON value, or
    the text if it is not JSON). Two replies are equal when they tell the caller the same."""

    status: int
    content_type: str
    body: Any

    @classmethod
    def of(cls, response: httpx.Response) -> Reply:
        return cls(
            response.status_code,
            response.headers.get("content-type", ""),
            json_or_text(response.content),
        )


def json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def assert_error(reply: httpx.Response | Reply, status: int, detail: str | None = None) -> str:
    """`reply` is the contract's error (§1): `status`, a JSON `{"detail": "<sentence>"}` (422s
    add `errors`), the sentence being `detail` when that is given; returns the sentence."""
    seen = reply if isinstance(reply, Reply) else Reply.of(reply)
    assert seen.status == status, seen
    assert seen.content_type.startswith("application/json"), seen
    assert isinstance(seen.body, dict), seen
    assert set(seen.body) == ({"detail", "errors"} if status == 422 else {"detail"}), seen
    found = seen.body["detail"]
    assert isinstance(found, str) and found, seen
    if detail is not None:
        assert found == detail, seen
    return found


def assert_too_many(reply: httpx.Response, window: float | None = None) -> int:
    """A 429 error with `Retry-After` in whole seconds (at most `window`, when given); returns
    the seconds."""
    assert_error(reply, 429)
    header = reply.headers.get("Retry-After")
    assert header is not None and header.isdigit(), f"Retry-After: {header!r}"
    seconds = int(header)
    assert seconds > 0
    if window is not None:
        assert seconds <= window, (seconds, window)
    return seconds


def assert_validation_error(reply: httpx.Response, field: str) -> set[str]:
    """A 422 (§1) whose `errors`, a list of `{"field", "message"}`, names `field`; returns every
    field it names."""
    assert_error(reply, 422)
    errors = reply.json().get("errors")
    assert isinstance(errors, list) and errors, reply.text
    for error in errors:
        assert isinstance(error, dict) and set(error) == {"field", "message"}, error
        assert isinstance(error["message"], str) and error["message"], error
    named = {error["field"] for error in errors}
    assert field in named, named
    return named


# --- sockets ----------------------------------------------------------------------------------
Server = LiveServer | ServerProcess  # anything serving at `.url` and `.ws_url`

CARRIERS = ("query", "header", "subprotocol")  # the ways a socket's token may travel


def socket_url(
    server: Server, device: Device, token: str | None = None, since: int | str | None = None
) -> str:
    """The socket path of `device` (on its type's path), with `token=` when `token` is given
    and `since=` (contract §6, written as given: a string goes in unchanged) when `since` is."""
    url = f"{server.ws_url}/ws/{device.type}/{device.id}"
    query = [] if token is None else [f"token={token}"]
    if since is not None:
        query.append(f"since={since}")
    return f"{url}?{'&'.join(query)}" if query else url


def dial(
    server: Server,
    device: Device,
    token: str | None,
    carrier: str = "query",
    origin: str | None = None,
    since: int | str | None = None,
) -> connect:
    """The (unopened) connection to `device`'s socket with `token` carried the `carrier` way: in
    `?token=`, in `Authorization: Bearer` or in the subprotocols `simbridge, bearer.<token>`;
    with `?since=` when `since` is given."""
    headers: dict[str, str] = {}
    subprotocols = None
    if carrier == "query":
        url = socket_url(server, device, token, since)
    elif carrier == "header":
        url, headers = socket_url(server, device, since=since), bearer(token)
    else:
        assert carrier == "subprotocol" and token is not None, (carrier, token)
        url = socket_url(server, device, since=since)
        subprotocols = [Subprotocol("simbridge"), Subprotocol(f"bearer.{token}")]
    return connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,
        origin=None if origin is None else Origin(origin),
        open_timeout=RECV_TIMEOUT,
        close_timeout=2,
    )


@asynccontextmanager
async def socket(
    server: Server, device: Device, token: str | None = None, carrier: str = "query"
) -> AsyncIterator[ClientConnection]:
    """An open WebSocket for `device` (with its owner's token unless `token` is given, carried
    the `carrier` way), its greeting already checked."""
    async with dial(server, device, device.owner.token if token is None else token, carrier) as ws:
        assert await receive(ws) == {"type": "connected", "device_id": device.id}
        yield ws


@dataclass(frozen=True)
class Handshake:
    """The outcome of one handshake: 101 if the socket opened (and was served), else the
    refusal's status, headers and body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    subprotocol: str | None = None
    greeting: dict[str, Any] | None = None  # the accepted socket's first frame

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def reply(self) -> Reply:
        return Reply(self.status, self.header("content-type") or "", json_or_text(self.body))


async def handshake(
    server: Server,
    device: Device,
    token: str | None,
    carrier: str = "query",
    origin: str | None = None,
    since: int | str | None = None,
) -> Handshake:
    """Try to open `device`'s socket with `token` (None: no token at all) carried the `carrier`
    way, with `?since=` when `since` is given. An accepted socket must greet and answer a ping
    before it is closed, so that a probe never drops a socket in the middle of its greeting (a
    `since` socket's greeting has its `seq`, and what it replays comes before the pong)."""
    try:
        async with dial(server, device, token, carrier, origin, since) as ws:
            assert ws.response is not None
            greeting = await receive(ws)
            if since is None:
                assert greeting == {"type": "connected", "device_id": device.id}
                await assert_next_is_pong(ws)
            else:
                assert greeting.get("type") == "connected", greeting
                assert greeting.get("device_id") == device.id, greeting
                assert isinstance(greeting.get("seq"), int), greeting
                await receive_until_pong(ws)
            return Handshake(
                101, dict(ws.response.headers.raw_items()), b"", ws.subprotocol, greeting
            )
    except InvalidStatus as refused:
        response = refused.response
        return Handshake(
            response.status_code, dict(response.headers.raw_items()), bytes(response.body or b"")
        )


async def receive(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame = json.loads(raw)
    assert isinstance(frame, dict)
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def assert_closed_with(ws: ClientConnection, code: int, reason: str | None = None) -> None:
    """The server closes `ws` with `code` (and `reason`, when given) within RECV_TIMEOUT."""
    await asyncio.wait_for(ws.wait_closed(), RECV_TIMEOUT)
    assert ws.close_code == code, (ws.close_code, ws.close_reason)
    if reason is not None:
        assert ws.close_reason == reason, (ws.close_code, ws.close_reason)


# --- frames, and proving that nothing arrived --------------------------------------------------
PING = {"type": "ping"}
PONG = {"type": "pong"}


def get_sims_command(req_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "command", "cmd": "GET_SIMS", "req_id": req_id, **extra}


def sim_info_event(req_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "event", "event": "SIM_INFO", "sims": [], "req_id": req_id, **extra}


async def assert_relays(
    host_ws: ClientConnection, client_ws: ClientConnection, req_id: str = "relay-check"
) -> None:
    """A client command reaches the host and the host's answer reaches the client (this also
    fills the relay's pairing cache for both devices)."""
    await send(client_ws, get_sims_command(req_id))
    assert await receive(host_ws) == get_sims_command(req_id)
    await send(host_ws, sim_info_event(req_id))
    assert await receive(client_ws) == sim_info_event(req_id)


# Waiting a while for silence cannot catch a frame that comes later. These helpers prove that
# nothing came by sending a marker down the same path: one socket's frames are handled, and
# written to its peer, in order, so anything on its way already would arrive before the marker.
async def assert_next_is_pong(ws: ClientConnection) -> None:
    """No reply to anything `ws` sent before is on its way: it pings, and the very next frame it
    receives must be the pong."""
    await send(ws, PING)
    frame = await receive(ws)
    assert frame == PONG, f"{frame} arrived before the pong"


MAX_FRAMES_BEFORE_PONG = 10_000  # more than a device's inbox holds by default (contract §6)


async def receive_until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Ping, and receive until the pong; returns the frames that came before it."""
    await send(ws, PING)
    before = []
    for _ in range(MAX_FRAMES_BEFORE_PONG):
        frame = await receive(ws)
        if frame == PONG:
            return before
        before.append(frame)
    raise AssertionError(f"no pong after {MAX_FRAMES_BEFORE_PONG} frames")


def marker_for(recipient: Device) -> dict[str, Any]:
    """A frame routed to `recipient` alone: a command to a host, an event to a client."""
    if recipient.type == "host":
        return {"type": "command", "cmd": "MARKER", "req_id": "m", "to_device_id": recipient.id}
    return {"type": "event", "event": "MARKER", "to_device_id": recipient.id}


async def assert_marker_arrives_next(
    sender_ws: ClientConnection, recipient: Device, recipient_ws: ClientConnection
) -> None:
    """Nothing reached `recipient` before now: the socket `sender_ws` (of a device paired with
    it) relays a marker to it, and the marker must be the next frame `recipient_ws` receives."""
    marker = marker_for(recipient)
    await send(sender_ws, marker)
    frame = await receive(recipient_ws)
    assert frame == marker, f"{frame} arrived before the marker"


async def assert_rest_marker_arrives_next(
    http: httpx.AsyncClient, host: Device, host_ws: ClientConnection, token: str | None = None
) -> None:
    """Nothing reached `host` before now: its owner (or `token`'s holder) sends it `GET /sims`
    over REST, and that command must be the next frame `host_ws` receives."""
    reply = await http.get(
        "/sims",
        params={"host_device_id": host.id},
        headers=bearer(host.owner.token if token is None else token),
    )
    assert reply.status_code == 200, reply.text
    marker = get_sims_command(reply.json()["req_id"])
    frame = await receive(host_ws)
    assert frame == marker, f"{frame} arrived before the marker"


async def raw_upgrade(
    server: LiveServer, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A WebSocket upgrade over a bare TCP connection, for tests that must misbehave after it;
    returns the reader, the writer and the server's response head."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
    return reader, writer, head
