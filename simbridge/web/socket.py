"""Sanic's WebSocket as a hub `Connection`, and the server protocol that accepts our clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sanic import Request
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from simbridge.web.context import app_context
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
    """Sanic's protocol, except that a handshake offering no subprotocol is accepted, the
    socket it opens receives through `QueuedWebsocket`, and a closed socket is let go of.

    The socket routes offer the `simbridge` subprotocol so that browsers (which pass their
    token as a subprotocol) get it echoed; websockets would then refuse every client that
    offers none, which is every phone app. Servers must be started with this protocol.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # Sanic cancels its timeout check in `close`, which an upgraded connection never
        # reaches: the check went on rescheduling itself and kept every closed socket's
        # objects (about 14 KiB) in memory for minutes after the phone went away.
        if self._callback_check_timeouts is not None:
            self._callback_check_timeouts.cancel()
            self._callback_check_timeouts = None

    async def websocket_handshake(
        self, request: Request, subprotocols: Sequence[str] | None = None
    ) -> Any:
        if not request.headers.get("sec-websocket-protocol"):
            subprotocols = None
        # Sanic never passes its WEBSOCKET_TIMEOUT on; this is how long a close may take.
        self.websocket_timeout = app_context(request).settings.ws_close_timeout
        ws = await super().websocket_handshake(request, subprotocols)
        self.websocket = QueuedWebsocket.take_over(ws)
        return self.websocket
