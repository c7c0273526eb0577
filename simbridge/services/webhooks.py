"""Webhooks of an account (contract §9): create (the secret is shown only then), list, delete.

The secret is stored as it is: every delivery is signed with it, so it must be at hand; an
encryption key derived from the JWT secret would make rotating that secret silently break every
webhook, and whoever reads the database already reads every relayed message.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from simbridge.errors import LimitReached, NotFound, ValidationFailed
from simbridge.hub import Broker
from simbridge.hub.control import WebhooksChanged
from simbridge.models import User, Webhook, WebhookDelivery, is_stored_id
from simbridge.services.webhook_delivery import Webhooks, events_of
from simbridge.services.webhook_targets import TargetRefused, check_target


async def create_webhook(
    user: User,
    url: str,
    events: list[str],
    webhooks: Webhooks,
    broker: Broker,
    *,
    allow_private: bool,
    max_webhooks: int,
) -> dict[str, Any]:
    try:
        await check_target(url, allow_private)
    except TargetRefused as refused:
        raise ValidationFailed(
            "Invalid value for: url", errors=[{"field": "url", "message": str(refused)}]
        ) from refused
    if await Webhook.filter(user_id=user.id).count() >= max_webhooks:
        raise LimitReached(f"An account may have at most {max_webhooks} webhooks")
    unique = list(dict.fromkeys(events))
    secret = secrets.token_hex(32)
    webhook = await Webhook.create(
        user_id=user.id, url=url, events=orjson.dumps(unique).decode(), secret=secret
    )
    webhooks.add(webhook)
    await broker.broadcast(WebhooksChanged(user.id))  # every other process loads it too
    return {"id": webhook.id, "url": webhook.url, "events": unique, "secret": secret}


async def list_webhooks(user: User) -> list[dict[str, Any]]:
    rows = await Webhook.filter(user_id=user.id).order_by("id")
    return [
        {"id": row.id, "url": row.url, "events": events_of(row), "created_at": row.created_at}
        for row in rows
    ]


async def delete_webhook(user: User, webhook_id: int, webhooks: Webhooks, broker: Broker) -> None:
    """Delete one of `user`'s webhooks with its pending deliveries; anyone else's is 404."""
    if not is_stored_id(webhook_id):
        raise NotFound("Webhook not found")
    if not await Webhook.exists(id=webhook_id, user_id=user.id):
        raise NotFound("Webhook not found")
    await WebhookDelivery.filter(webhook_id=webhook_id).delete()  # whether or not FKs cascade
    deleted = await Webhook.filter(id=webhook_id, user_id=user.id).delete()
    if not deleted:
        raise NotFound("Webhook not found")
    await webhooks.remove(webhook_id)
    await broker.broadcast(WebhooksChanged(user.id))
