"""The fence: every place SimBridge relies on Sanic's internals, and on the websockets objects
as Sanic holds them, named in one module.

Checked against sanic 25.12.1 and websockets 17.4, pinned in `pyproject.toml` (Tortoise's one
private parameter is in `simbridge/db.py`, pinned the same way). `INTERNALS` lists each
attribute or hook used here or overridden by a subclass elsewhere (`QueuedWebsocket`,
`SimBridgeProtocol`, `RedactingErrorHandler`), and `tests/simbridge/test_sanic_compat.py`
asserts that each one still exists: an upgrade that removes one fails that test, not a socket
in production. Raise a pin only once that test and the socket tests pass.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Coroutine
from typing import Any

from sanic import Request, Sanic
from sanic.handlers import ErrorHandler
from sanic.server.protocols.base_protocol import SanicProtocol
from sanic.server.protocols.http_protocol import HttpProtocol
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol
from sanic.worker.loader import CertLoader as CertLoader  # the base of SimBridgeCertLoader
from sanic.worker.process import Worker, WorkerProcess
from sanic_ext.config import PRIORITY as SANIC_EXT_PRIORITY
from sanic_routing import Route
from websockets.frames import Frame

# (owner, attribute): what it is for. Attributes of instances are checked on an instance that
# Sanic builds the way it does at run time (see the test).
INTERNALS: dict[tuple[type, str], str] = {
    # Read and written by the accessors below.
    (WebsocketImplProtocol, "assembler"): "Sanic's frame assembler, dropped by drop_assembler",
    (WebsocketImplProtocol, "conn_mutex"): "held while Sanic writes a frame: send_lock_held",
    (WebsocketImplProtocol, "async_data_received"): "Sanic's handling of pongs and closes",
    (WebsocketImplProtocol, "async_eof_received"): "Sanic's handling of the peer's EOF",
    (SanicProtocol, "_can_write"): "the event cleared while the transport is paused",
    (HttpProtocol, "_callback_check_timeouts"): "Sanic's timer, never cancelled on upgrade",
    (WebSocketProtocol, "websocket_timeout"): "how long Sanic's close waits for the peer",
    (Route, "extra"): "route.extra.websocket marks a WebSocket route",
    # Used directly by QueuedWebsocket, a subclass of Sanic's socket implementation.
    (WebsocketImplProtocol, "ws_proto"): "the websockets sans-I/O protocol Sanic drives",
    (WebsocketImplProtocol, "io_proto"): "Sanic's connection protocol under the socket",
    (WebsocketImplProtocol, "loop"): "the event loop the socket runs on",
    (WebsocketImplProtocol, "close_timeout"): "how long a close may take",
    (WebsocketImplProtocol, "fail_connection"): "close at once; QueuedWebsocket writes first",
    # Hooks that Sanic calls and our subclasses override.
    (WebsocketImplProtocol, "data_received"): "QueuedWebsocket assembles frames here",
    (WebsocketImplProtocol, "eof_received"): "QueuedWebsocket ends its inbox here",
    (WebsocketImplProtocol, "connection_lost"): "QueuedWebsocket ends its inbox here",
    (WebsocketImplProtocol, "close"): "QueuedWebsocket releases held steps first",
    (WebsocketImplProtocol, "recv"): "QueuedWebsocket receives from its inbox",
    (WebsocketImplProtocol, "send_data"): "QueuedWebsocket writes its waiting frames first",
    (WebsocketImplProtocol, "end_connection"): "QueuedWebsocket writes its waiting frames first",
    (WebSocketProtocol, "websocket_handshake"): "SimBridgeProtocol switches the socket class",
    (WebSocketProtocol, "connection_lost"): "SimBridgeProtocol cancels the timeout timer",
    (ErrorHandler, "log"): "RedactingErrorHandler logs no query string",
    # `Sanic(certloader_class=...)`: Sanic's worker_serve calls `load(app)` in every server
    # process (one or --workers N) for the TLS context; SimBridgeCertLoader (simbridge.web.tls)
    # overrides it to keep that context for reloading.
    (CertLoader, "load"): "SimBridgeCertLoader builds each process's TLS context",
    # Read by batch_signal_finalization: once started, each route added goes through
    # `amend`, which resets and finalizes the signal router unless it is already reset.
    (Sanic, "amend"): "finalizes the signal router after each route added once started",
    (Sanic, "signal_router"): "reset before sanic-ext's routes, finalized once after them",
    (Sanic, "signalize"): "finalizes the signal router",
    # How Sanic names its server worker processes (as Sanic's own worker_serve checks it).
    (Worker, "WORKER_PREFIX"): "server_worker_pids: the start of a server worker's name",
    (WorkerProcess, "SERVER_LABEL"): "server_worker_pids: the kind in a server worker's name",
}


def drop_assembler(ws: WebsocketImplProtocol) -> None:
    """Free Sanic's frame assembler (a queue, two events, two locks: about 4 KiB a socket)."""
    del ws.assembler


def sanic_read_step(
    ws: WebsocketImplProtocol, data_to_send: list[bytes], control: list[Frame]
) -> Coroutine[Any, Any, None]:
    """Sanic's own handling of what was read: writes `data_to_send`, handles pongs and closes
    (its assembler sees only `control`, never a data frame)."""
    step: Coroutine[Any, Any, None] = ws.async_data_received(data_to_send, control)
    return step


def sanic_eof_step(
    ws: WebsocketImplProtocol, data_to_send: list[bytes], control: list[Frame]
) -> Coroutine[Any, Any, None]:
    """Sanic's own handling of the peer's EOF (it ends the connection)."""
    step: Coroutine[Any, Any, None] = ws.async_eof_received(data_to_send, control)
    return step


def send_lock_held(ws: WebsocketImplProtocol) -> bool:
    """Whether one of Sanic's `send` calls is writing a frame on this socket right now."""
    return ws.conn_mutex.locked()


def writing_paused(io_proto: SanicProtocol) -> bool:
    """Whether the transport is over its high-water mark (the peer is not reading)."""
    return not io_proto._can_write.is_set()


def stop_timeout_check(protocol: HttpProtocol) -> None:
    """Cancel Sanic's HTTP timeout check, which an upgraded connection never cancels."""
    if protocol._callback_check_timeouts is not None:
        protocol._callback_check_timeouts.cancel()
        protocol._callback_check_timeouts = None


def set_close_timeout(protocol: WebSocketProtocol, seconds: float) -> None:
    """Sanic never passes its WEBSOCKET_TIMEOUT on; this is how long a close may take."""
    protocol.websocket_timeout = seconds


def is_websocket_route(route: Route) -> bool:
    return bool(route.extra.websocket)


def connection_protocol(request: Request) -> object:
    """The asyncio protocol serving the request's connection."""
    return request.transport.get_protocol()


def server_worker_pids() -> list[int]:
    """The PIDs of the server workers that Sanic's manager (this process) started: not its
    multiprocessing manager or other helper processes, which a signal must not reach."""
    prefix = "-".join([Worker.WORKER_PREFIX, WorkerProcess.SERVER_LABEL])
    return [
        child.pid
        for child in multiprocessing.active_children()
        if child.pid is not None and child.name.startswith(prefix)
    ]


def batch_signal_finalization(app: Sanic[Any, Any]) -> None:
    """Finalize Sanic's signal router once after sanic-ext's start-up routes, not per route.

    sanic-ext adds a HEAD and an OPTIONS route for every route in a `before_server_start`
    listener (priority `SANIC_EXT_PRIORITY`), after Sanic marks the app started; Sanic's
    `amend` then resets and compiles the signal router again for each one (about 15 ms each:
    most of a server's start-up, and of a test's). Resetting it just before sanic-ext's
    listener and finalizing it just after makes those `amend`s leave it alone."""

    async def reset(app: Sanic[Any, Any]) -> None:
        app.signal_router.reset()

    async def finalize(app: Sanic[Any, Any]) -> None:
        app.signalize(app.config.TOUCHUP)

    app.before_server_start(reset, priority=SANIC_EXT_PRIORITY + 1)
    app.before_server_start(finalize, priority=SANIC_EXT_PRIORITY - 1)
