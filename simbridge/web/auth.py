"""Who is calling: the bearer token of a REST request or a WebSocket handshake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from simbridge.models import User
from simbridge.services.accounts import user_for_token
from simbridge.web.context import app_context

Handler = Callable[..., Awaitable[HTTPResponse]]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def socket_token(request: Request) -> str | None:
    """Phone apps send `?token=`; a header works as well."""
    return request.args.get("token") or bearer_token(request)


async def current_user(request: Request) -> User:
    return await user_for_token(bearer_token(request), app_context(request).settings)


def authenticated(handler: Handler) -> Handler:
    """Run the handler with `request.ctx.user` set, or answer 401."""

    @wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        request.ctx.user = await current_user(request)
        return await handler(request, *args, **kwargs)

    return wrapper
