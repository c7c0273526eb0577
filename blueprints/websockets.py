"""The device sockets: `/ws/host/{id}` and `/ws/client/{id}` (contract §4).

The handshake is checked by request middleware, before the upgrade, so a refusal is a plain
HTTP 401/403/404 and never an open socket.
"""

from __future__ import annotations

from sanic import Blueprint, Request, Websocket
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from simbridge.models import DeviceType
from simbridge.services.accounts import user_for_token
from simbridge.services.devices import owned_device
from simbridge.web.auth import socket_token
from simbridge.web.context import app_context
from simbridge.web.socket import SanicSocket

bp = Blueprint("websockets", url_prefix="/ws")


@bp.on_request
async def admit(request: Request) -> None:
    """Refuse the handshake unless the token's user owns this device, of this path's type."""
    settings = app_context(request).settings
    user = await user_for_token(socket_token(request), settings)
    device_type = DeviceType(request.route.ctx.device_type)
    await owned_device(user, request.match_info["device_id"], device_type)


@bp.websocket("/host/<device_id:int>", ctx_device_type="host")
async def host_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A host's live connection."""
    await _serve(request, ws, device_id)


@bp.websocket("/client/<device_id:int>", ctx_device_type="client")
async def client_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A client's live connection."""
    await _serve(request, ws, device_id)


async def _serve(request: Request, ws: Websocket, device_id: int) -> None:
    relay = app_context(request).relay
    conn = SanicSocket(ws)
    try:
        await relay.connect(device_id, conn)
        async for raw in ws:
            reply = await relay.handle(device_id, raw)
            if reply is not None:
                await conn.send(reply)
    except (ConnectionClosed, WebsocketClosed):
        pass  # the peer left, keepalive gave up, or the socket was replaced: all normal
    finally:
        await relay.disconnect(device_id, conn)
