"""The device sockets: `/ws/host/{id}` and `/ws/client/{id}` (contract §4).

The handshake is checked by request middleware, before the upgrade, so a refusal is a plain
HTTP status (401, 403, 404, 429) and never an open socket.
"""

from __future__ import annotations

import logging

from sanic import Blueprint, Request, Websocket
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from simbridge.errors import BadRequest, Forbidden
from simbridge.hub.base import close_quietly
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_REVOKED
from simbridge.services.admission import admit_socket
from simbridge.web.auth import SUBPROTOCOL, socket_token
from simbridge.web.context import app_context, runtime_of
from simbridge.web.origins import origin_allowed
from simbridge.web.parsing import socket_since
from simbridge.web.queued_websocket import QueuedWebsocket
from simbridge.web.server_protocol import SimBridgeProtocol

bp = Blueprint("websockets", url_prefix="/ws")
log = logging.getLogger("simbridge.websockets")


@bp.on_request
async def admit(request: Request) -> None:
    """Refuse the handshake unless its credential opens this device, on this path's type.

    Browsers must come from an allowed `Origin` or the server's own; phone apps send none.
    """
    ctx = app_context(request)
    origin = request.headers.get("origin")
    own_host = request.headers.get("host", "")
    if origin is not None and not origin_allowed(origin, own_host, ctx.settings.origins):
        raise Forbidden("This Origin may not open a socket")
    assert request.route is not None  # blueprint middleware runs for a matched route only
    device_type = DeviceType(request.route.ctx.device_type)
    request.ctx.since = socket_since(request)
    if request.ctx.since is not None and not ctx.runtime.keeps_frames:
        raise BadRequest("since needs kept frames: SIMBRIDGE_REDIS_INBOXES=true with Redis")
    request.ctx.admission = await admit_socket(
        socket_token(request),
        request.match_info["device_id"],
        device_type,
        ctx.runtime.identities,
        ctx.runtime.device_records,
        ctx.runtime.broker,
    )
    SimBridgeProtocol.adopt(request)


async def host_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A host's live connection."""
    await _serve(request, ws, device_id)


async def client_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A client's live connection."""
    await _serve(request, ws, device_id)


# Registered by call: Sanic's `websocket` decorator is untyped and would untype the handlers.
bp.add_websocket_route(
    host_socket, "/host/<device_id:int>", ctx_device_type="host", subprotocols=[SUBPROTOCOL]
)
bp.add_websocket_route(
    client_socket, "/client/<device_id:int>", ctx_device_type="client", subprotocols=[SUBPROTOCOL]
)


async def _reply(ws: QueuedWebsocket, reply: str) -> None:
    """Answer the sender, unless its socket is closing: the frames it sent before its close
    are still handled (a `ping` before a command must not cost the command)."""
    try:
        await ws.send(reply)
    except (ConnectionClosed, WebsocketClosed):
        pass


async def _serve(request: Request, ws: Websocket, device_id: int) -> None:
    if not isinstance(ws, QueuedWebsocket):  # `admit` made sure of it: adopt() switched it
        raise TypeError(f"socket handlers need a QueuedWebsocket, not {type(ws).__name__}")
    runtime = runtime_of(request)
    relay = runtime.relay
    admission = request.ctx.admission
    # One handle per socket: this handler receives from `ws` and the relay sends through it.
    session = relay.open_session(
        ws,
        device_id,
        admission.device_type,
        admission.user_id,
        admission.token_version,
        admission.device_token_digest,
        request.ctx.since,
    )
    try:
        if not await admission.still_valid(device_id, runtime.device_records, runtime.identities):
            await close_quietly(ws, CLOSE_REVOKED, "revoked")
            return
        await relay.connect(session)
        while True:  # until the socket closes: receive then raises ConnectionClosed
            raw = await ws.receive()
            try:
                reply = await relay.handle(session, raw)
            except Exception:  # a bug of ours must not close the socket or reach the client
                log.exception("frame from device %s could not be handled", device_id)
                reply = relay.internal_error()
            if reply is not None:
                await _reply(ws, reply)
    except (ConnectionClosed, WebsocketClosed):
        pass  # the peer left, keepalive gave up, or the socket was replaced: all normal
    finally:
        await relay.disconnect(session)
