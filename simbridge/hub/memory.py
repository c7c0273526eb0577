"""The in-process broker: a dict from device id to its socket. One process only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from simbridge.hub.base import Connection, close_all, close_quietly
from simbridge.protocol import CLOSE_GOING_AWAY, CLOSE_REPLACED, CLOSE_TOO_SLOW

log = logging.getLogger("simbridge.hub")


class MemoryBroker:
    """Routes within this process only; start-up refuses more than one worker with it.

    A send that takes longer than `send_timeout` (a peer that stopped reading) closes that
    peer's socket, so a slow consumer can never stall the device that is sending to it.
    """

    def __init__(self, send_timeout: float) -> None:
        self._connections: dict[int, Connection] = {}
        self._send_timeout = send_timeout

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        await close_all(connections, CLOSE_GOING_AWAY, "server shutdown")

    async def attach(self, device_id: int, conn: Connection) -> None:
        previous = self._connections.get(device_id)
        self._connections[device_id] = conn
        if previous is not None and previous is not conn:
            await close_quietly(previous, CLOSE_REPLACED, "replaced")

    async def detach(self, device_id: int, conn: Connection) -> bool:
        if self._connections.get(device_id) is not conn:
            return False
        del self._connections[device_id]
        return True

    async def deliver(self, device_id: int, frame: str) -> bool:
        conn = self._connections.get(device_id)
        if conn is None:
            return False
        if conn.send_now(frame):  # the common case: no timer, no lock, no task switch
            return True
        try:
            async with asyncio.timeout(self._send_timeout):
                await conn.send(frame)
        except TimeoutError:
            log.warning("device %s stopped reading; closing its socket", device_id)
            await self.detach(device_id, conn)
            conn.abort(CLOSE_TOO_SLOW, "too slow")
            return False
        except Exception:  # the socket closed under us: that is offline, not an error
            await self.detach(device_id, conn)
            return False
        return True

    async def online(self, device_ids: Iterable[int]) -> set[int]:
        return {device_id for device_id in device_ids if device_id in self._connections}
