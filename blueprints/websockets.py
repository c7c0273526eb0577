"""The device sockets: `/ws/host/{id}` and `/ws/client/{id}` (contract §4).

The handshake is checked by request middleware, before the upgrade, so a refusal is a plain
HTTP status (401, 403, 404, 429) and never an open socket.
"""

from __future__ import annotations

from sanic import Blueprint, Request, Websocket
from sanic.exceptions import WebsocketClosed
from websockets.exceptions import ConnectionClosed

from simbridge.errors import Forbidden, TooManyRequests
from simbridge.models import DeviceType
from simbridge.security import is_device_token
from simbridge.services.accounts import user_for_token
from simbridge.services.devices import device_for_token, owned_device
from simbridge.web.auth import SUBPROTOCOL, socket_token
from simbridge.web.context import app_context
from simbridge.web.socket import SanicSocket

bp = Blueprint("websockets", url_prefix="/ws")
SOCKET_CAP_RETRY_SECONDS = 60


@bp.on_request
async def admit(request: Request) -> None:
    """Refuse the handshake unless its credential opens this device, on this path's type.

    A user token opens any of the user's devices; a device token only its own device.
    Browsers must come from an allowed `Origin`; phone apps send none.
    """
    ctx = app_context(request)
    origin = request.headers.get("origin")
    if origin is not None and origin not in ctx.settings.origins:
        raise Forbidden("This Origin may not open a socket")
    device_id: int = request.match_info["device_id"]
    device_type = DeviceType(request.route.ctx.device_type)
    token = socket_token(request)
    if token and is_device_token(token):
        device = await device_for_token(token, device_id, device_type)
        request.ctx.user_id, request.ctx.token_version = device.user_id, None
    else:
        user, version = await user_for_token(token, ctx.settings)
        await owned_device(user, device_id, device_type)
        request.ctx.user_id, request.ctx.token_version = user.id, version
    if not ctx.relay.has_room(request.ctx.user_id, device_id):
        raise TooManyRequests(SOCKET_CAP_RETRY_SECONDS)


@bp.websocket("/host/<device_id:int>", ctx_device_type="host", subprotocols=[SUBPROTOCOL])
async def host_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A host's live connection."""
    await _serve(request, ws, device_id)


@bp.websocket("/client/<device_id:int>", ctx_device_type="client", subprotocols=[SUBPROTOCOL])
async def client_socket(request: Request, ws: Websocket, device_id: int) -> None:
    """A client's live connection."""
    await _serve(request, ws, device_id)


async def _serve(request: Request, ws: Websocket, device_id: int) -> None:
    relay = app_context(request).relay
    conn = SanicSocket(ws)
    session = relay.open_session(conn, device_id, request.ctx.user_id, request.ctx.token_version)
    try:
        await relay.connect(session)
        async for raw in ws:
            reply = await relay.handle(session, raw)
            if reply is not None:
                await conn.send(reply)
    except (ConnectionClosed, WebsocketClosed):
        pass  # the peer left, keepalive gave up, or the socket was replaced: all normal
    finally:
        await relay.disconnect(session)
