"""Sanic's WebSocket as a hub `Connection`, and the server protocol that accepts our clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanic import Request
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from simbridge.web.queued_websocket import QueuedWebsocket


class SanicSocket:
    __slots__ = ("_ws",)

    def __init__(self, ws: QueuedWebsocket) -> None:
        self._ws = ws

    async def send(self, data: str) -> None:
        await self._ws.send(data)

    def send_now(self, data: str) -> bool:
        return self._ws.send_now(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def abort(self, code: int, reason: str) -> None:
        self._ws.fail_connection(code, reason)


class SimBridgeProtocol(WebSocketProtocol):
    """Sanic's protocol, except that a handshake offering no subprotocol is accepted and the
    socket it opens receives through `QueuedWebsocket`.

    The socket routes offer the `simbridge` subprotocol so that browsers (which pass their
    token as a subprotocol) get it echoed; websockets would then refuse every client that
    offers none, which is every phone app. Servers must be started with this protocol.
    """

    async def websocket_handshake(
        self, request: Request, subprotocols: Sequence[str] | None = None
    ) -> Any:
        if not request.headers.get("sec-websocket-protocol"):
            subprotocols = None
        ws = await super().websocket_handshake(request, subprotocols)
        self.websocket = QueuedWebsocket.take_over(ws)
        return self.websocket
