"""Sockets that vanish mid-handshake leave nothing behind."""

from __future__ import annotations

import asyncio

from simbridge.config import Settings
from tests.helpers import (
    LiveServer,
    assert_next_is_pong,
    eventually,
    is_offline,
    make_account,
    make_device,
    raw_upgrade,
    serving,
    socket,
)

ABANDONED = 20


async def abandon_handshake(live: LiveServer, path: str) -> None:
    """Complete the upgrade, then drop the TCP connection before the greeting is read."""
    _, writer, _ = await raw_upgrade(live, path)  # the handler starts now
    writer.transport.abort()


async def test_abandoned_handshakes_do_not_count_against_socket_cap(settings: Settings) -> None:
    async with serving(settings, max_sockets_per_user=1) as served:
        alice = await make_account(served.http, "alice")
        first = await make_device(served.http, alice, "host")
        second = await make_device(served.http, alice, "client")
        path = f"/ws/host/{first.id}?token={alice.token}"
        await asyncio.gather(*(abandon_handshake(served.live, path) for _ in range(ABANDONED)))

        # up to ~5 s for the server to notice the drops
        assert await eventually(lambda: is_offline(served.http, first))
        async with socket(served.live, second) as ws:  # refused with 429 if a session leaked
            await assert_next_is_pong(ws)
