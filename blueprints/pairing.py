"""Pairing: a host's owner asks for a code, a client of the same account spends it."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import HostQuery, PairCodeOut, PairConfirm, PairedOut
from simbridge.services.pairing import confirm_pairing, create_pairing_code
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body, parse_query

bp = Blueprint("pairing", url_prefix="/pair")


@bp.post("")
@documented(tag="pairing", query=HostQuery, ok=PairCodeOut, errors=(401, 403, 404, 422))
@authenticated
async def create_code(request: Request) -> HTTPResponse:
    """Create a single-use 6-digit pairing code for one of your hosts."""
    query = parse_query(request, HostQuery)
    settings = app_context(request).settings
    code = await create_pairing_code(request.ctx.user, query.host_device_id, settings)
    return json({"code": code, "expires_in_seconds": settings.pairing_code_ttl_seconds})


@bp.post("/confirm")
@documented(tag="pairing", body=PairConfirm, ok=PairedOut, errors=(400, 401, 403, 404))
@authenticated
async def confirm(request: Request) -> HTTPResponse:
    """Spend a pairing code to pair its host with one of your clients."""
    body = parse_body(request, PairConfirm)
    ctx = app_context(request)
    pairing = await confirm_pairing(
        request.ctx.user, body.code, body.client_device_id, ctx.settings, ctx.relay.directory
    )
    return json(
        {"status": "paired", "pairing_id": pairing.id, "host_device_id": pairing.host_device_id}
    )
