"""Sockets that vanish mid-handshake leave nothing behind."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from simbridge.config import Settings
from tests.helpers import LiveServer, make_account, make_device, raw_upgrade, receive, socket

ABANDONED = 20


async def abandon_handshake(live: LiveServer, path: str) -> None:
    """Complete the upgrade, then drop the TCP connection before the greeting is read."""
    _, writer, _ = await raw_upgrade(live, path)  # the handler starts now
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
