"""Who is calling: the bearer token of a REST request or a WebSocket handshake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from simbridge.models import User
from simbridge.web.context import runtime_of

Handler = Callable[..., Awaitable[HTTPResponse]]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


SUBPROTOCOL = "simbridge"
BEARER_SUBPROTOCOL_PREFIX = "bearer."


def socket_token(request: Request) -> str | None:
    """The credential of a WebSocket handshake, wherever the client could put it.

    Phone apps send `?token=`. Native clients can send `Authorization: Bearer`. Browsers can
    set no header, so they offer the subprotocols `simbridge, bearer.<token>`: the server
    answers `simbridge` and never echoes the token.
    """
    return request.args.get("token") or bearer_token(request) or _subprotocol_token(request)


def _subprotocol_token(request: Request) -> str | None:
    offered = request.headers.get("sec-websocket-protocol", "")
    for protocol in offered.split(","):
        protocol = protocol.strip()
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(BEARER_SUBPROTOCOL_PREFIX) or None
    return None


async def current_user(request: Request) -> User:
    user, _ = await runtime_of(request).identities.user_for_token(bearer_token(request))
    return user


def authenticated(handler: Handler) -> Handler:
    """Run the handler with `request.ctx.user` set, or answer 401."""

    @wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        request.ctx.user = await current_user(request)
        return await handler(request, *args, **kwargs)

    return wrapper
