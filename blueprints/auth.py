"""Accounts: register and log in."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import Credentials, LoginBody, TokenOut, UserOut
from simbridge.services.accounts import login as login_user
from simbridge.services.accounts import register_user
from simbridge.web.context import app_context
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body

bp = Blueprint("auth", url_prefix="/auth")


@bp.post("/register")
@documented(tag="auth", body=Credentials, ok=UserOut, errors=(400, 409), secured=False)
async def register(request: Request) -> HTTPResponse:
    """Create an account."""
    credentials = parse_body(request, Credentials)
    settings = app_context(request).settings
    user = await register_user(credentials.username, credentials.password, settings)
    return json({"id": user.id, "username": user.username})


@bp.post("/login")
@documented(tag="auth", body=LoginBody, ok=TokenOut, errors=(400, 401), secured=False)
async def login(request: Request) -> HTTPResponse:
    """Exchange username and password for a bearer token."""
    credentials = parse_body(request, LoginBody)
    settings = app_context(request).settings
    token, user_id = await login_user(credentials.username, credentials.password, settings)
    return json({"token": token, "user_id": user_id})
