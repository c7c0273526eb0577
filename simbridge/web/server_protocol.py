"""The connection protocol of a socket route: Sanic's, with three changes SimBridge needs."""

from __future__ import annotations

from collections.abc import Sequence

from sanic import Request
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from simbridge.web import sanic_compat
from simbridge.web.context import app_context
from simbridge.web.queued_websocket import QueuedWebsocket


class SimBridgeProtocol(WebSocketProtocol):
    """Sanic's protocol, except that a handshake offering no subprotocol is accepted, the
    socket it opens receives through `QueuedWebsocket`, and a closed socket is let go of.

    The socket routes offer the `simbridge` subprotocol so that browsers (which pass their
    token as a subprotocol) get it echoed; websockets would then refuse every client that
    offers none, which is every phone app.
    """

    __slots__ = ()  # the same layout as Sanic's class: `adopt` can switch a live connection

    @classmethod
    def adopt(cls, request: Request) -> None:
        """Serve the connection of a socket handshake with this protocol.

        Sanic builds its own protocol for every connection, whichever way it was started
        (`simbridge serve`, `sanic ... --factory`, `app.create_server`); the class of that one
        object is switched before its upgrade, so every way of starting gets our sockets.
        """
        protocol = sanic_compat.connection_protocol(request)
        if type(protocol) is WebSocketProtocol:
            protocol.__class__ = cls
        elif not isinstance(protocol, cls):
            raise TypeError(f"socket routes need Sanic's WebSocketProtocol, not {protocol!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[no-untyped-call]  # Sanic's, unannotated
        # Sanic cancels its timeout check in `close`, which an upgraded connection never
        # reaches: the check went on rescheduling itself and kept every closed socket's
        # objects (about 14 KiB) in memory for minutes after the phone went away.
        sanic_compat.stop_timeout_check(self)

    async def websocket_handshake(
        self, request: Request, subprotocols: Sequence[str] | None = None
    ) -> QueuedWebsocket:
        if not request.headers.get("sec-websocket-protocol"):
            subprotocols = None
        sanic_compat.set_close_timeout(self, app_context(request).settings.ws_close_timeout)
        ws = await super().websocket_handshake(request, subprotocols)
        self.websocket = QueuedWebsocket.take_over(ws)
        return self.websocket
