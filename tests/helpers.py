"""Helpers the tests share: a live server, accounts, devices, pairings, sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket as socket_module
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from simbridge.app import create_app
from simbridge.config import Settings
from simbridge.runtime import Runtime
from simbridge.web.context import SimBridgeApp

RECV_TIMEOUT = 5.0


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
        return {"Authorization": f"Bearer {self.token}"}


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


async def make_account(
    http: httpx.AsyncClient, username: str, password: str = "secret123"
) -> Account:
    reply = await http.post("/auth/register", json={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    login = await http.post("/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    body = login.json()
    return Account(username, password, body["user_id"], body["token"])


async def make_device(http: httpx.AsyncClient, owner: Account, kind: str, name: str = "") -> Device:
    reply = await http.post(
        "/devices",
        json={"name": name or f"{owner.username}-{kind}", "type": kind},
        headers=owner.headers,
    )
    assert reply.status_code == 200, reply.text
    return Device(reply.json()["id"], kind, owner)


async def pairing_code(http: httpx.AsyncClient, owner: Account, host: Device) -> str:
    reply = await http.post(f"/pair?host_device_id={host.id}", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["code"])


async def pair_devices(
    http: httpx.AsyncClient, owner: Account, host: Device, client: Device
) -> Pair:
    code = await pairing_code(http, owner, host)
    reply = await http.post(
        "/pair/confirm", json={"code": code, "client_device_id": client.id}, headers=owner.headers
    )
    assert reply.status_code == 200, reply.text
    return Pair(host, client, reply.json()["pairing_id"])


@asynccontextmanager
async def socket(
    server: LiveServer, device: Device, token: str | None = None
) -> AsyncIterator[ClientConnection]:
    """An open WebSocket for `device`, its greeting already checked."""
    url = f"{server.ws_url}/ws/{device.type}/{device.id}?token={token or device.owner.token}"
    async with connect(url, open_timeout=RECV_TIMEOUT, close_timeout=2) as ws:
        assert await receive(ws) == {"type": "connected", "device_id": device.id}
        yield ws


async def receive(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame = json.loads(raw)
    assert isinstance(frame, dict)
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def nothing_arrives(ws: ClientConnection, within: float = 0.2) -> bool:
    """True if no frame arrives within `within` seconds (used only where silence is the point)."""
    try:
        await asyncio.wait_for(ws.recv(), within)
    except TimeoutError:
        return True
    return False


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
