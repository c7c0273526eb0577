"""A live `Connection` as the hub sees it, and closing connections without waiting on a peer.

The hub knows device ids, users and sockets only: no HTTP, no database, no pairing rules
(those live in `simbridge.services.relay`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger("simbridge.hub")
CLOSE_WAIT_SECONDS = 1.0


class Connection(Protocol):
    """A live socket (`simbridge.web.queued_websocket.QueuedWebsocket` in the server)."""

    async def send(self, data: str) -> None: ...

    def send_now(self, data: str) -> bool:
        """Send without waiting if the socket can take the frame at once; False if it cannot
        (the peer is behind on reading, or another send is under way): then use `send`."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def abort(self, code: int, reason: str) -> None:
        """Close at once without waiting for the peer (it may have stopped reading)."""


async def close_quietly(conn: Connection, code: int, reason: str) -> None:
    """Close politely, and abort if the peer does not take the close frame within a second."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_SECONDS):
            await conn.close(code, reason)
    except TimeoutError:
        conn.abort(code, reason)
    except Exception:  # already closed or the transport is gone
        log.debug("close(%s) on a dead socket ignored", code)


async def close_all(conns: Iterable[Connection], code: int, reason: str) -> None:
    """Close many sockets at once: one unresponsive peer must not delay the others."""
    await asyncio.gather(*(close_quietly(conn, code, reason) for conn in conns))
