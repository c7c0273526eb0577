"""Delivering event frames to webhooks (contract §9), off the relay path.

The relay calls `Webhooks.offer` (no await, no database): `users` says in one dict lookup
whether the host's account has any webhook at all. Each webhook has its own bounded queue
(`webhook_queue_size` pending deliveries; when full the oldest is dropped and counted), its
own `webhook_concurrency` worker tasks and its own HTTP client (connection pool), so a slow or
dead receiver only ever holds up itself.

A delivery is first tried from memory. Only when a try fails is it written to the database
(`WebhookDelivery`, with `next_attempt_at`), so a delivery that succeeds the first time costs
no database write; at shutdown the deliveries still in memory are written too, and every stored
one is resumed when a server starts. Retries: the first after about
`webhook_first_retry_seconds`, then doubling, with jitter, at most
`webhook_max_retry_interval_seconds` apart, given up after `webhook_retry_for_seconds`; the
`delivery_id` (and the signed body) never change.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from simbridge.config import Settings
from simbridge.db_locks import DatabaseLock
from simbridge.models import Webhook, WebhookDelivery
from simbridge.services.webhook_targets import TargetRefused, check_target

log = logging.getLogger("simbridge.webhooks")

ALL_EVENTS = "*"
# A receiver's reply body is read up to this much and then dropped: read to its end, the
# connection goes back to the pool (kept alive); a larger body closes it instead.
REPLY_BODY_LIMIT = 64 * 1024
# With several processes, the one holding this (for its lifetime) resumes the stored deliveries
RESUMER = DatabaseLock("webhooks", 0x5B_0003)


def signature(secret: str, body: bytes) -> str:
    """The `X-SimBridge-Signature` header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(
    attempts: int, first: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before the next try after `attempts` failed ones: `first` doubled each time,
    at most `cap`, with "equal jitter" (between half of that and all of it)."""
    base: float = min(cap, first * 2.0 ** min(attempts - 1, 64))
    return base * (0.5 + rand() / 2)


@dataclass(eq=False, slots=True)
class Delivery:
    delivery_id: str
    body: bytes
    created: float  # epoch seconds: given up `webhook_retry_for_seconds` after this
    attempts: int = 0
    stored: bool = False
    done: bool = False  # delivered, given up, dropped or its webhook deleted


@dataclass(eq=False)
class Target:
    """One webhook, with its queue, workers and client."""

    id: int
    user_id: int
    url: str
    events: frozenset[str]
    secret: str = field(repr=False)
    client: httpx.AsyncClient = field(repr=False)
    pending: dict[str, Delivery] = field(default_factory=dict)  # oldest first
    ready: deque[Delivery] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    def wants(self, event: object) -> bool:
        return ALL_EVENTS in self.events or event in self.events


def events_of(webhook: Webhook) -> list[str]:
    return [str(name) for name in orjson.loads(webhook.events)]


class Webhooks:
    """Every webhook of every account, and their deliveries, in this process."""

    def __init__(self, settings: Settings, count_dropped: Callable[[], None]) -> None:
        self._settings = settings
        self._count_dropped = count_dropped
        self.users: dict[int, list[Target]] = {}  # read by the relay: keep it a plain dict
        self._targets: dict[int, Target] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._held = AsyncExitStack()

    # --- life -------------------------------------------------------------------------------
    async def start(
        self, resumer: Callable[[], AbstractAsyncContextManager[bool]] | None = None
    ) -> None:
        """Load every webhook and resume the stored deliveries. With `resumer` (a lock), only
        the process that gets it resumes, and holds it until it stops: workers that start
        together do not all send the same stored deliveries."""
        for webhook in await Webhook.all():
            self.add(webhook)
        if resumer is None or await self._held.enter_async_context(resumer()):
            await self._resume()

    async def _resume(self) -> None:
        now = time.time()
        loop = asyncio.get_running_loop()
        rows = await WebhookDelivery.all().order_by("id")
        for row in rows:
            target = self._targets.get(row.webhook_id)
            if target is None:
                continue
            delivery = Delivery(
                row.delivery_id,
                row.body.encode(),
                row.created_at.timestamp(),
                row.attempts,
                stored=True,
            )
            self._admit(target, delivery)
            delay = max(0.0, row.next_attempt_at.timestamp() - now)
            target.timers[delivery.delivery_id] = loop.call_later(
                delay, self._due, target, delivery
            )
        if rows:
            log.info("webhooks: resumed %d pending deliveries", len(rows))

    async def stop(self) -> None:
        """Stop every worker, then store the deliveries still pending in memory."""
        targets = list(self._targets.values())
        for target in targets:
            await self._halt(target)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        unstored = [
            (target, delivery)
            for target in targets
            for delivery in target.pending.values()
            if not delivery.stored and not delivery.done
        ]
        if unstored:
            now = datetime.now(UTC)
            try:
                await WebhookDelivery.bulk_create(
                    [
                        WebhookDelivery(
                            delivery_id=delivery.delivery_id,
                            webhook_id=target.id,
                            body=delivery.body.decode(),
                            attempts=delivery.attempts,
                            created_at=datetime.fromtimestamp(delivery.created, UTC),
                            next_attempt_at=now,
                        )
                        for target, delivery in unstored
                    ]
                )
            except Exception:
                log.exception("webhooks: could not store %d pending deliveries", len(unstored))
        self._targets.clear()
        self.users.clear()
        await self._held.aclose()

    # --- webhooks ---------------------------------------------------------------------------
    def add(self, webhook: Webhook) -> None:
        if webhook.id in self._targets:
            return
        concurrency = max(1, self._settings.webhook_concurrency)
        target = Target(
            id=webhook.id,
            user_id=webhook.user_id,
            url=webhook.url,
            events=frozenset(events_of(webhook)),
            secret=webhook.secret,
            client=httpx.AsyncClient(
                timeout=self._settings.webhook_timeout_seconds,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=concurrency),
            ),
        )
        self._targets[webhook.id] = target
        self.users.setdefault(webhook.user_id, []).append(target)
        target.workers = [
            asyncio.create_task(self._work(target), name=f"webhook-{webhook.id}")
            for _ in range(concurrency)
        ]

    async def remove(self, webhook_id: int) -> None:
        """Forget a deleted webhook (its stored deliveries went with its row)."""
        target = self._targets.pop(webhook_id, None)
        if target is None:
            return
        others = [t for t in self.users.get(target.user_id, ()) if t is not target]
        if others:
            self.users[target.user_id] = others
        else:
            self.users.pop(target.user_id, None)
        for delivery in target.pending.values():
            delivery.done = True
        await self._halt(target)

    async def _halt(self, target: Target) -> None:
        for timer in target.timers.values():
            timer.cancel()
        target.timers.clear()
        for worker in target.workers:
            worker.cancel()
        await asyncio.gather(*target.workers, return_exceptions=True)
        await target.client.aclose()

    async def reload(self, user_id: int | None = None) -> None:
        """Catch up with the webhooks another process created or deleted: the user's
        (`WebhooksChanged`), or everyone's (after control messages may have been lost)."""
        rows = await (Webhook.all() if user_id is None else Webhook.filter(user_id=user_id))
        seen = {row.id for row in rows}
        known = [
            webhook_id
            for webhook_id, target in self._targets.items()
            if user_id is None or target.user_id == user_id
        ]
        for webhook_id in known:
            if webhook_id not in seen:
                await self.remove(webhook_id)
        for row in rows:
            self.add(row)

    # --- the relay's side -------------------------------------------------------------------
    def offer(self, user_id: int, device_id: int, frame: dict[str, Any]) -> None:
        """A host of `user_id` sent event `frame`: queue it for every webhook that wants it.
        Never awaits; costs nothing more than the lookup for an account without webhooks."""
        targets = self.users.get(user_id)
        if not targets:
            return
        event = frame.get("event")
        created_at = None  # read from the clock once, and only when some webhook wants it
        for target in targets:
            if not target.wants(event):
                continue
            if created_at is None:
                created_at = self._settings.clock().isoformat()
            delivery_id = uuid.uuid4().hex
            try:
                body = orjson.dumps(
                    {
                        "webhook_id": target.id,
                        "delivery_id": delivery_id,
                        "device_id": device_id,
                        "event": frame,
                        "created_at": created_at,
                    }
                )
            except TypeError:  # not representable (cannot happen for a decoded frame)
                continue
            delivery = Delivery(delivery_id, body, time.time())
            self._admit(target, delivery)
            target.ready.append(delivery)
            target.wakeup.set()

    def _admit(self, target: Target, delivery: Delivery) -> None:
        """Make room (dropping the oldest pending) and add `delivery` to the pending."""
        limit = max(1, self._settings.webhook_queue_size)
        while len(target.pending) >= limit:
            oldest = target.pending.pop(next(iter(target.pending)))
            self._finish(target, oldest)
            if target.ready and target.ready[0] is oldest:
                target.ready.popleft()
            self._count_dropped()
            log.warning(
                "webhook %d: queue full, dropped delivery %s", target.id, oldest.delivery_id
            )
        target.pending[delivery.delivery_id] = delivery
        if len(target.ready) > 2 * limit:  # dropped ones not at its head: keep it bounded
            target.ready = deque(queued for queued in target.ready if not queued.done)

    # --- delivering -------------------------------------------------------------------------
    async def _work(self, target: Target) -> None:
        while True:
            while not target.ready:
                target.wakeup.clear()
                await target.wakeup.wait()
            delivery = target.ready.popleft()
            if delivery.done:
                continue
            try:
                await self._try(target, delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %d: delivery %s failed", target.id, delivery.delivery_id)

    async def _try(self, target: Target, delivery: Delivery) -> None:
        ok = await self._send(target, delivery)
        if delivery.done:  # dropped or deleted meanwhile
            return
        if ok:
            target.pending.pop(delivery.delivery_id, None)
            self._finish(target, delivery)
            return
        delivery.attempts += 1
        settings = self._settings
        now = time.time()
        delay = retry_delay(
            delivery.attempts,
            settings.webhook_first_retry_seconds,
            settings.webhook_max_retry_interval_seconds,
        )
        if now + delay - delivery.created > settings.webhook_retry_for_seconds:
            log.warning(
                "webhook %d: gave up delivery %s after %d tries",
                target.id,
                delivery.delivery_id,
                delivery.attempts,
            )
            target.pending.pop(delivery.delivery_id, None)
            self._finish(target, delivery)
            return
        await self._store(target, delivery, now + delay)
        if delivery.done:
            return
        target.timers[delivery.delivery_id] = asyncio.get_running_loop().call_later(
            max(0.0, now + delay - time.time()), self._due, target, delivery
        )

    def _due(self, target: Target, delivery: Delivery) -> None:
        target.timers.pop(delivery.delivery_id, None)
        if not delivery.done:
            target.ready.append(delivery)
            target.wakeup.set()

    async def _send(self, target: Target, delivery: Delivery) -> bool:
        """One try: True on a 2xx within the timeout. The target is checked again first (its
        name may resolve elsewhere now); redirects are not followed."""
        try:
            await check_target(target.url, self._settings.webhook_allow_private)
        except TargetRefused as refused:
            log.warning("webhook %d: target refused: %s", target.id, refused)
            return False
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SimBridge-Webhooks",
            "X-SimBridge-Delivery": delivery.delivery_id,
            "X-SimBridge-Signature": signature(target.secret, delivery.body),
        }
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                request = target.client.build_request(
                    "POST", target.url, content=delivery.body, headers=headers
                )
                response = await target.client.send(request, stream=True)
                await _drain(response)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            log.info("webhook %d: try of %s failed: %s", target.id, delivery.delivery_id, exc)
            return False
        if 200 <= response.status_code < 300:
            return True
        log.info(
            "webhook %d: try of %s answered %d",
            target.id,
            delivery.delivery_id,
            response.status_code,
        )
        return False

    async def _store(self, target: Target, delivery: Delivery, next_at: float) -> None:
        when = datetime.fromtimestamp(next_at, UTC)
        try:
            if delivery.stored:
                await WebhookDelivery.filter(delivery_id=delivery.delivery_id).update(
                    attempts=delivery.attempts, next_attempt_at=when
                )
            else:
                await WebhookDelivery.create(
                    delivery_id=delivery.delivery_id,
                    webhook_id=target.id,
                    body=delivery.body.decode(),
                    attempts=delivery.attempts,
                    created_at=datetime.fromtimestamp(delivery.created, UTC),
                    next_attempt_at=when,
                )
                delivery.stored = True
        except Exception:  # the webhook was deleted meanwhile, or the database is away
            log.warning("webhook %d: could not store delivery %s", target.id, delivery.delivery_id)

    def _finish(self, target: Target, delivery: Delivery) -> None:
        delivery.done = True
        timer = target.timers.pop(delivery.delivery_id, None)
        if timer is not None:
            timer.cancel()
        if delivery.stored:
            self._spawn(WebhookDelivery.filter(delivery_id=delivery.delivery_id).delete())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(_quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def targets_of(self, user_id: int) -> Iterable[Target]:
        return tuple(self.users.get(user_id, ()))


async def _drain(response: httpx.Response) -> None:
    """Read and drop the reply (the status is all we need), up to `REPLY_BODY_LIMIT`: an
    unread reply would cost the connection, a new TCP connection per delivery (measured:
    a quarter of a delivery's CPU)."""
    received = 0
    try:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > REPLY_BODY_LIMIT:
                break
    finally:
        await response.aclose()


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception:
        log.warning("webhooks: could not delete a finished delivery's row")
