"""Sockets that vanish mid-handshake leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import replace

import httpx

from simbridge.config import Settings
from tests.helpers import LiveServer, make_account, make_device, receive, socket

ABANDONED = 20


async def abandon_handshake(live: LiveServer, path: str) -> None:
    """Complete the upgrade, then drop the TCP connection before the greeting is read."""
    host, port = live.url.removeprefix("http://").split(":")
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
    await reader.readuntil(b"\r\n\r\n")  # the 101 response: the handler starts now
    writer.transport.abort()


async def test_abandoned_handshakes_do_not_count_against_socket_cap(settings: Settings) -> None:
    async with (
        LiveServer.running(replace(settings, max_sockets_per_user=1)) as live,
        httpx.AsyncClient(base_url=live.url) as http,
    ):
        alice = await make_account(http, "alice")
        first = await make_device(http, alice, "host")
        second = await make_device(http, alice, "client")
        path = f"/ws/host/{first.id}?token={alice.token}"
        await asyncio.gather(*(abandon_handshake(live, path) for _ in range(ABANDONED)))

        for _ in range(100):  # bounded: up to ~5 s for the server to notice the drops
            devices = (await http.get("/devices", headers=alice.headers)).json()
            if not any(device["is_online"] for device in devices):
                break
            await asyncio.sleep(0.05)
        async with socket(live, second) as ws:  # refused with 429 if a session leaked
            await ws.send('{"type":"ping"}')
            assert await receive(ws) == {"type": "pong"}
