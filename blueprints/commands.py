"""REST fallbacks for commands: the same path through the hub as a client's WebSocket command."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import CallCommand, CommandSent, HostQuery, SmsCommand
from simbridge.web.auth import authenticated
from simbridge.web.context import runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body, parse_query

bp = Blueprint("commands")
ERRORS = (401, 403, 404, 503)


@bp.post("/sms")
@documented(tag="commands", body=SmsCommand, ok=CommandSent, errors=(400, *ERRORS))
@authenticated
async def send_sms(request: Request) -> HTTPResponse:
    """Ask your host to send an SMS (`SEND_SMS`)."""
    sms = parse_body(request, SmsCommand)
    args = {"sim": sms.sim, "to": sms.to, "body": sms.body}
    return await _relay(request, sms.to_device_id, "SEND_SMS", args)


@bp.post("/call")
@documented(tag="commands", body=CallCommand, ok=CommandSent, errors=(400, *ERRORS))
@authenticated
async def make_call(request: Request) -> HTTPResponse:
    """Ask your host to place a call (`MAKE_CALL`)."""
    call = parse_body(request, CallCommand)
    return await _relay(request, call.to_device_id, "MAKE_CALL", {"sim": call.sim, "to": call.to})


@bp.get("/sims")
@documented(tag="commands", query=HostQuery, ok=CommandSent, errors=(422, *ERRORS))
@authenticated
async def get_sims(request: Request) -> HTTPResponse:
    """Ask your host for its SIM cards (`GET_SIMS`); the answer arrives as a `SIM_INFO` event."""
    query = parse_query(request, HostQuery)
    return await _relay(request, query.host_device_id, "GET_SIMS", {})


async def _relay(request: Request, host_id: int, cmd: str, args: dict[str, object]) -> HTTPResponse:
    relay = runtime_of(request).relay
    req_id = await relay.send_command(request.ctx.user, host_id, cmd, args)
    return json({"status": "sent", "req_id": req_id})
