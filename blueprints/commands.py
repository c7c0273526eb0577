"""REST fallbacks for commands: the same path through the hub as a client's WebSocket command,
with the v2 options (contract §7): queue for an offline host, wait for the answer, and the
state of any command."""

from __future__ import annotations

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.errors import NotFound
from simbridge.schemas import (
    CallCommand,
    CommandSent,
    CommandStateOut,
    OfflineOption,
    SimsQuery,
    SmsCommand,
    WaitQuery,
)
from simbridge.services.commands import OfflinePolicy, req_key
from simbridge.web.auth import authenticated
from simbridge.web.context import runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body, parse_query

bp = Blueprint("commands")
ERRORS = (401, 403, 404, 503)


@bp.post("/sms")
@documented(
    "send_sms",
    tag="commands",
    body=SmsCommand,
    query=WaitQuery,
    ok=CommandSent,
    errors=(400, *ERRORS),
)
@authenticated
async def send_sms(request: Request) -> HTTPResponse:
    """Ask your host to send an SMS (`SEND_SMS`)."""
    sms = parse_body(request, SmsCommand)
    wait = parse_query(request, WaitQuery).wait
    args = {"sim": sms.sim, "to": sms.to, "body": sms.body}
    return await _relay(request, sms.to_device_id, "SEND_SMS", args, sms, wait)


@bp.post("/call")
@documented(
    "make_call",
    tag="commands",
    body=CallCommand,
    query=WaitQuery,
    ok=CommandSent,
    errors=(400, *ERRORS),
)
@authenticated
async def make_call(request: Request) -> HTTPResponse:
    """Ask your host to place a call (`MAKE_CALL`)."""
    call = parse_body(request, CallCommand)
    wait = parse_query(request, WaitQuery).wait
    args = {"sim": call.sim, "to": call.to}
    return await _relay(request, call.to_device_id, "MAKE_CALL", args, call, wait)


@bp.get("/sims")
@documented("get_sims", tag="commands", query=SimsQuery, ok=CommandSent, errors=(422, *ERRORS))
@authenticated
async def get_sims(request: Request) -> HTTPResponse:
    """Ask your host for its SIM cards (`GET_SIMS`); the answer arrives as a `SIM_INFO` event."""
    query = parse_query(request, SimsQuery)
    return await _relay(request, query.host_device_id, "GET_SIMS", {}, query, query.wait)


@bp.get("/commands/<req_id:str>")
@documented("get_command", tag="commands", ok=CommandStateOut, errors=(401, 404))
@authenticated
async def command_state(request: Request, req_id: str) -> HTTPResponse:
    """The state of one of your commands (queued, sent, answered, expired or failed)."""
    key = req_key(req_id)
    state = (
        None
        if key is None
        else await runtime_of(request).commands.state_of(request.ctx.user.id, key)
    )
    if state is None:
        raise NotFound("Command not found")
    return json(state)


async def _relay(
    request: Request,
    host_id: int,
    cmd: str,
    args: dict[str, object],
    option: OfflineOption,
    wait: int,
) -> HTTPResponse:
    relay = runtime_of(request).relay
    policy = OfflinePolicy(option.offline == "queue", option.ttl_seconds)
    reply = await relay.send_command(request.ctx.user, host_id, cmd, args, policy, wait)
    if reply.answer is None:
        return json({"status": reply.status, "req_id": reply.req_id})
    answer = orjson.Fragment(reply.answer)  # the host's event, byte for byte
    return json({"status": reply.status, "req_id": reply.req_id, "answer": answer})
