"""Webhooks (contract §9): the caller's account's event frames POSTed to a URL, signed."""

from __future__ import annotations

from pydantic import RootModel
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.schemas import Deleted, WebhookCreate, WebhookCreated, WebhookOut
from simbridge.services import webhooks
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context, runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body

bp = Blueprint("webhooks", url_prefix="/webhooks")


class WebhookList(RootModel[list[WebhookOut]]):
    pass


@bp.post("")
@documented(
    "create_webhook", tag="webhooks", body=WebhookCreate, ok=WebhookCreated, errors=(400, 401, 409)
)
@authenticated
async def add_webhook(request: Request) -> HTTPResponse:
    """Have the account's hosts' event frames whose `event` is listed POSTed to `url`.

    The reply's `secret` signs every delivery (`X-SimBridge-Signature`); it is shown only this
    once. Private, loopback and link-local targets are refused unless the server allows them.
    """
    new = parse_body(request, WebhookCreate)
    settings = app_context(request).settings
    runtime = runtime_of(request)
    created = await webhooks.create_webhook(
        request.ctx.user,
        new.url,
        new.events,
        runtime.webhooks,
        runtime.broker,
        allow_private=settings.webhook_allow_private,
        max_webhooks=settings.max_webhooks_per_user,
    )
    return json(created)


@bp.get("")
@documented("list_webhooks", tag="webhooks", ok=WebhookList, errors=(401,))
@authenticated
async def get_webhooks(request: Request) -> HTTPResponse:
    """List the account's webhooks (never their secrets)."""
    return json(await webhooks.list_webhooks(request.ctx.user))


@bp.delete("/<webhook_id:int>")
@documented("delete_webhook", tag="webhooks", ok=Deleted, errors=(401, 404))
@authenticated
async def delete_webhook(request: Request, webhook_id: int) -> HTTPResponse:
    """Delete a webhook; its pending deliveries are dropped."""
    runtime = runtime_of(request)
    await webhooks.delete_webhook(request.ctx.user, webhook_id, runtime.webhooks, runtime.broker)
    return json({"status": "deleted"})
