"""Pairing: a host's owner asks for a code, a client of the same account spends it; pairings
can be listed and removed."""

from __future__ import annotations

from pydantic import RootModel
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import Deleted, HostQuery, PairCodeOut, PairConfirm, PairedOut, PairingOut
from simbridge.services import pairing
from simbridge.web.addresses import client_address
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context, runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body, parse_query

bp = Blueprint("pairing")


class PairingList(RootModel[list[PairingOut]]):
    pass


@bp.post("/pair")
@documented(
    "create_pairing_code",
    tag="pairing",
    query=HostQuery,
    ok=PairCodeOut,
    errors=(401, 403, 404, 422, 429),
)
@authenticated
async def create_code(request: Request) -> HTTPResponse:
    """Create a single-use 6-digit pairing code for one of your hosts."""
    query = parse_query(request, HostQuery)
    settings = app_context(request).settings
    code = await pairing.create_pairing_code(request.ctx.user, query.host_device_id, settings)
    return json({"code": code, "expires_in_seconds": settings.pairing_code_ttl_seconds})


@bp.post("/pair/confirm")
@documented(
    "confirm_pairing_code",
    tag="pairing",
    body=PairConfirm,
    ok=PairedOut,
    errors=(400, 401, 403, 404, 429),
)
@authenticated
async def confirm(request: Request) -> HTTPResponse:
    """Spend a pairing code to pair its host with one of your clients."""
    body = parse_body(request, PairConfirm)
    ctx = app_context(request)
    user = request.ctx.user
    guard = ctx.runtime.guard.pairing(user.id, client_address(request, ctx.settings))
    paired = await pairing.confirm_pairing(
        user, body.code, body.client_device_id, ctx.settings, ctx.runtime.broker, guard
    )
    return json(
        {"status": "paired", "pairing_id": paired.id, "host_device_id": paired.host_device_id}
    )


@bp.get("/pairings")
@documented("list_pairings", tag="pairing", ok=PairingList, errors=(401,))
@authenticated
async def list_pairings(request: Request) -> HTTPResponse:
    """List the pairings of your devices."""
    return json(await pairing.list_pairings(request.ctx.user))


@bp.delete("/pairings/<pairing_id:int>")
@documented("delete_pairing", tag="pairing", ok=Deleted, errors=(401, 404))
@authenticated
async def delete_pairing(request: Request, pairing_id: int) -> HTTPResponse:
    """Unpair a host and a client; nothing more is routed between them."""
    broker = runtime_of(request).broker
    await pairing.delete_pairing(request.ctx.user, pairing_id, broker)
    return json({"status": "deleted"})
