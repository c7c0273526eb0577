"""Accounts: register, log in, change the password, log out everywhere."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import Credentials, LoginBody, PasswordChange, TokenOut, UserOut
from simbridge.services import accounts, revocation
from simbridge.web.addresses import client_address
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body

bp = Blueprint("auth", url_prefix="/auth")


@bp.post("/register")
@documented(
    "register", tag="auth", body=Credentials, ok=UserOut, errors=(400, 409, 429), secured=False
)
async def register(request: Request) -> HTTPResponse:
    """Create an account."""
    credentials = parse_body(request, Credentials)
    ctx = app_context(request)
    guard = ctx.runtime.guard.registration(client_address(request, ctx.settings))
    user = await accounts.register_user(
        credentials.username, credentials.password, ctx.settings, guard
    )
    return json({"id": user.id, "username": user.username})


@bp.post("/login")
@documented("login", tag="auth", body=LoginBody, ok=TokenOut, errors=(400, 401, 429), secured=False)
async def login(request: Request) -> HTTPResponse:
    """Exchange username and password for a bearer token."""
    credentials = parse_body(request, LoginBody)
    ctx = app_context(request)
    guard = ctx.runtime.guard.login(credentials.username, client_address(request, ctx.settings))
    token, user_id = await accounts.login(
        credentials.username, credentials.password, ctx.settings, guard
    )
    return json({"token": token, "user_id": user_id})


@bp.post("/password")
@documented("change_password", tag="auth", body=PasswordChange, ok=TokenOut, errors=(400, 401, 429))
@authenticated
async def change_password(request: Request) -> HTTPResponse:
    """Change your password; every token issued before stops working, their sockets close."""
    change = parse_body(request, PasswordChange)
    ctx = app_context(request)
    user = request.ctx.user
    guard = ctx.runtime.guard.login(user.username, client_address(request, ctx.settings))
    token = await revocation.change_password(
        user,
        change.current_password,
        change.new_password,
        ctx.settings,
        guard,
        ctx.runtime.broker,
    )
    return json({"token": token, "user_id": user.id})


@bp.post("/logout-all")
@documented("logout_all", tag="auth", ok=TokenOut, errors=(401,))
@authenticated
async def logout_all(request: Request) -> HTTPResponse:
    """Revoke every token issued so far (their sockets close); returns a fresh token."""
    ctx = app_context(request)
    user = request.ctx.user
    token = await revocation.log_out_everywhere(user, ctx.settings, ctx.runtime.broker)
    return json({"token": token, "user_id": user.id})
