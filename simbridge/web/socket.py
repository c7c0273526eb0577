"""Sanic's WebSocket as a hub `Connection`."""

from __future__ import annotations

from sanic import Websocket


class SanicSocket:
    __slots__ = ("_ws",)

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    async def send(self, data: str) -> None:
        await self._ws.send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def abort(self, code: int, reason: str) -> None:
        self._ws.fail_connection(code, reason)
