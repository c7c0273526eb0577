"""Stored webhook deliveries are resumed by one process only, when several share a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from simbridge.config import Settings
from simbridge.db_locks import holding
from simbridge.models import User, Webhook, WebhookDelivery
from simbridge.services.webhook_delivery import RESUMER, Webhooks


async def test_only_the_process_holding_the_lock_resumes(orm_settings: Settings) -> None:
    settings = replace(orm_settings, webhook_allow_private=True, webhook_first_retry_seconds=60)
    user = await User.create(username="alice", password_hash="x")
    hook = await Webhook.create(user=user, url="http://127.0.0.1:9/x", events='["*"]', secret="s")
    far = datetime(2100, 1, 1, tzinfo=UTC)  # not due: nothing is tried during the test
    await WebhookDelivery.create(
        delivery_id="d1", webhook=hook, body="{}", attempts=1, created_at=far, next_attempt_at=far
    )
    resumer = partial(holding, settings, RESUMER, wait=False)
    first, second = Webhooks(settings, lambda: None), Webhooks(settings, lambda: None)
    await first.start(resumer=resumer)
    await second.start(resumer=resumer)  # the lock is first's: no resume here
    try:
        assert list(first._targets[hook.id].pending) == ["d1"]
        assert list(second._targets[hook.id].pending) == []
        assert set(second.users) == {user.id}  # it still delivers new events
    finally:
        await second.stop()
        await first.stop()
    third = Webhooks(settings, lambda: None)
    await third.start(resumer=resumer)  # first stopped: the lock is free again
    try:
        assert list(third._targets[hook.id].pending) == ["d1"]
    finally:
        await third.stop()
    assert await WebhookDelivery.filter(delivery_id="d1").count() == 1
