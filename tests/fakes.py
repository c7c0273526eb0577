"""A stand-in for a live socket, for unit tests of the hub and the relay's routing rules:
no network, so a routing rule is checked in milliseconds."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class FakeConnection:
    """A `Connection` that records what is sent to it.

    `stalled` makes it behave like a peer that stopped reading: `send_now` refuses and `send`
    never finishes. `broken` makes it behave like a socket that closed under the sender.
    """

    def __init__(self, *, stalled: bool = False, broken: bool = False) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.aborted_with: tuple[int, str] | None = None
        self.stalled = stalled
        self.broken = broken

    async def send(self, data: str) -> None:
        if self.broken:
            raise ConnectionResetError("socket closed")
        if self.stalled:
            await asyncio.Event().wait()  # forever: the caller's timeout ends it
        self.sent.append(data)

    def send_now(self, data: str) -> bool:
        if self.stalled or self.broken:
            return False
        self.sent.append(data)
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)

    def abort(self, code: int, reason: str) -> None:
        self.aborted_with = (code, reason)

    def frames(self) -> list[dict[str, Any]]:
        """What was sent, parsed."""
        return [json.loads(text) for text in self.sent]
