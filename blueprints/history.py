"""History: the messages a device sent or received."""

from __future__ import annotations

from pydantic import RootModel
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import HistoryQuery, MessageOut
from simbridge.services.history import list_history
from simbridge.web.auth import authenticated
from simbridge.web.context import runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_query

bp = Blueprint("history", url_prefix="/history")


class MessageList(RootModel[list[MessageOut]]):
    pass


@bp.get("")
@documented(
    "list_history", tag="history", query=HistoryQuery, ok=MessageList, errors=(401, 404, 422)
)
@authenticated
async def get_history(request: Request) -> HTTPResponse:
    """Messages sent or received by one of your devices, newest first."""
    query = parse_query(request, HistoryQuery)
    writer = runtime_of(request).writer
    return json(await list_history(request.ctx.user, query.device_id, query.limit, writer))
