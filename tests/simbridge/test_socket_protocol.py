"""The server protocol (`SimBridgeProtocol`) lets go of every socket once it is closed."""

from __future__ import annotations

import asyncio
import gc

from simbridge.web.server_protocol import SimBridgeProtocol
from tests.helpers import PING, PONG, LiveServer, Pair, receive, send, socket

RECONNECTS = 20


def live_protocols() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, SimBridgeProtocol))


async def test_closed_sockets_are_released(server: LiveServer, pair: Pair) -> None:
    """A phone that reconnects all day must not grow the server: Sanic's own timeout check
    kept each closed connection (about 14 KiB) alive for minutes."""
    before = live_protocols()
    for _ in range(RECONNECTS):
        async with socket(server, pair.client) as ws:
            await send(ws, PING)
            assert await receive(ws) == PONG

    for _ in range(100):  # bounded: up to ~5 s for the server to see every connection go
        if live_protocols() <= before:
            break
        await asyncio.sleep(0.05)
    assert live_protocols() <= before
