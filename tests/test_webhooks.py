"""Webhooks (contract §9) against a real receiver: an HTTP server on 127.0.0.1 in the test."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from simbridge.config import Settings
from simbridge.models import WebhookDelivery
from tests.helpers import (
    Account,
    assert_error,
    make_account,
    make_device,
    make_pair,
    receive,
    receive_until_pong,
    send,
    serving,
    socket,
)
from tests.processes import Servers
from tests.redis_server import REDIS_URL, delete_keys, require_redis, unique_prefix

FAST_RETRIES = {
    "webhook_allow_private": True,
    "webhook_first_retry_seconds": 0.05,
    "webhook_max_retry_interval_seconds": 0.2,
    "webhook_timeout_seconds": 2.0,
}


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers with `status` (None: never answers) and `reply`; each
    connection's writer is in `writers`."""

    port: int = 0
    status: int | None = 200
    reply: bytes = b""
    hits: list[Hit] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.hits.append(Hit(headers, body))
                self.arrived.set()
                if self.status is None:
                    await asyncio.sleep(3600)
                head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.reply)}\r\n\r\n"
                writer.write(head.encode("latin-1") + self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def until(self, count: int, within: float = 5.0) -> list[Hit]:
        deadline = time.monotonic() + within
        while len(self.hits) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self.hits)} of {count} deliveries arrived"
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass
        return self.hits


@asynccontextmanager
async def receiving(status: int | None = 200) -> AsyncIterator[Receiver]:
    receiver = Receiver(status=status)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        for writer in receiver.writers:
            writer.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def verified(hit: Hit, secret: str) -> bool:
    """A receiver's check, as docs/webhooks.md shows it."""
    expected = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers["x-simbridge-signature"])


async def add_webhook(
    http: httpx.AsyncClient, owner: Account, url: str, events: list[str]
) -> dict[str, Any]:
    reply = await http.post("/webhooks", json={"url": url, "events": events}, headers=owner.headers)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def sms(text: str) -> dict[str, Any]:
    return {"type": "event", "event": "INCOMING_SMS", "from": "+100", "text": text}


# --- the REST side ----------------------------------------------------------------------------
async def test_create_list_delete_and_the_secret_is_shown_only_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # DEBUG for ours; libraries' DEBUG (aiosqlite) shows SQL
    caplog.set_level(logging.DEBUG, logger="simbridge")
    async with serving(settings, webhook_allow_private=True) as world, receiving() as receiver:
        http = world.http
        alice = await make_account(http, "alice")
        bob = await make_account(http, "bob")
        created = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS", "SIM_INFO"])
        assert set(created) == {"id", "url", "events", "secret"}
        assert created["url"] == receiver.url
        assert created["events"] == ["INCOMING_SMS", "SIM_INFO"]
        assert len(created["secret"]) >= 32
        listed = (await http.get("/webhooks", headers=alice.headers)).json()
        assert [set(row) for row in listed] == [{"id", "url", "events", "created_at"}]
        assert listed[0]["id"] == created["id"]
        assert (await http.get("/webhooks", headers=bob.headers)).json() == []
        # bob can neither see nor delete alice's: 404, as for one that does not exist
        assert_error(await http.delete(f"/webhooks/{created['id']}", headers=bob.headers), 404)
        assert_error(await http.delete("/webhooks/999999", headers=alice.headers), 404)
        reply = await http.delete(f"/webhooks/{created['id']}", headers=alice.headers)
        assert reply.status_code == 200 and reply.json() == {"status": "deleted"}
        assert (await http.get("/webhooks", headers=alice.headers)).json() == []
        assert_error(await http.get("/webhooks"), 401)
    assert created["secret"] not in caplog.text
    assert created["secret"] not in json.dumps(listed)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/hook", "events": ["INCOMING_SMS"]},
        {"url": "file:///etc/passwd", "events": ["INCOMING_SMS"]},
        {"url": "example.com/hook", "events": ["INCOMING_SMS"]},
        {"url": "https://example.com/hook", "events": []},
        {"url": "https://example.com/hook", "events": ["bad name!"]},
        {"url": "https://example.com/hook", "events": [""]},
        {"url": "https://example.com/hook"},
        {"events": ["INCOMING_SMS"]},
    ],
)
async def test_bad_webhooks_are_422(
    http: httpx.AsyncClient, alice: Account, body: dict[str, Any]
) -> None:
    assert_error(await http.post("/webhooks", json=body, headers=alice.headers), 422)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost/hook",  # a name resolving to loopback
        "https://localhost:8443/hook",
    ],
)
async def test_private_targets_are_refused(
    http: httpx.AsyncClient, alice: Account, url: str
) -> None:
    reply = await http.post("/webhooks", json={"url": url, "events": ["*"]}, headers=alice.headers)
    assert_error(reply, 422)
    assert reply.json()["errors"][0]["field"] == "url"
    assert (await http.get("/webhooks", headers=alice.headers)).json() == []


async def test_the_number_of_webhooks_per_account_is_capped(settings: Settings) -> None:
    async with serving(settings, webhook_allow_private=True, max_webhooks_per_user=2) as world:
        alice = await make_account(world.http, "alice")
        for _ in range(2):
            await add_webhook(world.http, alice, "http://127.0.0.1:9/x", ["*"])
        reply = await world.http.post(
            "/webhooks",
            json={"url": "http://127.0.0.1:9/x", "events": ["*"]},
            headers=alice.headers,
        )
        assert_error(reply, 409)


# --- deliveries -------------------------------------------------------------------------------
async def test_matching_events_of_the_accounts_hosts_are_delivered_signed(
    settings: Settings,
) -> None:
    async with serving(settings, **FAST_RETRIES) as world, receiving() as receiver:
        http, live = world.http, world.live
        alice = await make_account(http, "alice")
        bob = await make_account(http, "bob")
        pair = await make_pair(http, alice)
        bobs = await make_pair(http, bob)
        hook = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
        async with (
            socket(live, pair.host) as host,
            socket(live, pair.client) as client,
            socket(live, bobs.host) as bob_host,
        ):
            await send(bob_host, sms("bob's"))  # another account's host: not delivered
            await send(host, {"type": "event", "event": "SIM_INFO", "sims": []})  # not listed
            await send(host, sms("hello"))
            for _ in range(2):
                await receive(client)
            await send(client, {"type": "event", "event": "INCOMING_SMS"})
            [hit] = await receiver.until(1)
            await send(host, sms("second"))
            await receiver.until(2)
        assert len(receiver.hits) == 2  # the client's frame and the others never came
        assert verified(hit, hook["secret"])
        assert not verified(hit, hook["secret"] + "x")
        body = hit.json
        assert set(body) == {"webhook_id", "delivery_id", "device_id", "event", "created_at"}
        assert body["webhook_id"] == hook["id"]
        assert body["device_id"] == pair.host.id
        assert body["event"] == sms("hello")
        assert hit.headers["x-simbridge-delivery"] == body["delivery_id"]
        assert hit.headers["content-type"] == "application/json"
        assert receiver.hits[1].json["event"]["text"] == "second"
        assert receiver.hits[1].json["delivery_id"] != body["delivery_id"]


async def test_deliveries_to_a_receiver_share_one_kept_alive_connection(
    settings: Settings,
) -> None:
    """A reply left unread closes its connection: one TCP connection per delivery, most of a
    delivery's cost. Read (and dropped), the connection is used again. One try at a time, so
    that each finds the connection of the one before back in the pool."""
    async with (
        serving(settings, **FAST_RETRIES, webhook_concurrency=1) as world,
        receiving() as receiver,
    ):
        receiver.reply = b'{"ok":true}'
        alice = await make_account(world.http, "alice")
        pair = await make_pair(world.http, alice)
        await add_webhook(world.http, alice, receiver.url, ["INCOMING_SMS"])
        async with socket(world.live, pair.host) as host:
            for number in range(1, 4):
                await send(host, sms(f"sms {number}"))
            await receiver.until(3)
        assert [hit.json["event"]["text"] for hit in receiver.hits] == ["sms 1", "sms 2", "sms 3"]
        assert len(receiver.writers) == 1


async def test_all_events_with_a_star_and_none_after_delete(settings: Settings) -> None:
    async with serving(settings, **FAST_RETRIES) as world, receiving() as receiver:
        http, live = world.http, world.live
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        hook = await add_webhook(http, alice, receiver.url, ["*"])
        async with socket(live, host) as ws:
            await send(ws, {"type": "event", "event": "CALL_STATE", "state": "ringing"})
            [hit] = await receiver.until(1)
            assert hit.json["event"]["event"] == "CALL_STATE"
            await http.delete(f"/webhooks/{hook['id']}", headers=alice.headers)
            await send(ws, sms("after delete"))
            await receive_until_pong(ws)  # the frame was handled (its reply: no client)
            await asyncio.sleep(0.2)
        assert len(receiver.hits) == 1


async def test_a_failed_try_is_retried_with_the_same_delivery_id(
    any_store_settings: Settings,
) -> None:
    """On SQLite and PostgreSQL: the stored delivery is written, then deleted once delivered."""
    async with serving(any_store_settings, **FAST_RETRIES) as world, receiving(500) as receiver:
        http, live = world.http, world.live
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        hook = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
        async with socket(live, host) as ws:
            await send(ws, sms("retry me"))
            await receiver.until(2)
            rows = await WebhookDelivery.all()  # stored once its first try failed
            assert [row.delivery_id for row in rows] == [receiver.hits[0].json["delivery_id"]]
            receiver.status = 200
            count = len(receiver.hits)
            hits = await receiver.until(count + 1)
        ids = {hit.headers["x-simbridge-delivery"] for hit in hits}
        assert ids == {hits[0].json["delivery_id"]}
        assert all(hit.body == hits[0].body for hit in hits)
        assert all(verified(hit, hook["secret"]) for hit in hits)
        for _ in range(50):  # delivered: its row goes
            if not await WebhookDelivery.all().count():
                break
            await asyncio.sleep(0.05)
        assert await WebhookDelivery.all().count() == 0


async def test_the_target_is_checked_again_before_every_try(settings: Settings) -> None:
    """A webhook whose address became private (DNS changed; here: the setting) is not called."""
    async with serving(settings, **FAST_RETRIES) as world, receiving() as receiver:
        http, live = world.http, world.live
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
        webhooks = live.runtime.webhooks
        webhooks._settings = replace(webhooks._settings, webhook_allow_private=False)
        async with socket(live, host) as ws:
            await send(ws, sms("to a private address"))
            await receive_until_pong(ws)
            for _ in range(50):  # refused like a failed try: stored for a retry
                if await WebhookDelivery.all().count():
                    break
                await asyncio.sleep(0.05)
        assert await WebhookDelivery.all().count() == 1
        assert receiver.hits == []


async def test_deleting_a_webhook_drops_its_pending_deliveries(settings: Settings) -> None:
    async with serving(settings, **FAST_RETRIES) as world, receiving(500) as receiver:
        http, live = world.http, world.live
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        hook = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
        async with socket(live, host) as ws:
            await send(ws, sms("never delivered"))
            await receiver.until(2)
        assert await WebhookDelivery.all().count() == 1
        reply = await http.delete(f"/webhooks/{hook['id']}", headers=alice.headers)
        assert reply.status_code == 200
        assert await WebhookDelivery.all().count() == 0
        tries = len(receiver.hits)
        await asyncio.sleep(0.5)  # several retry intervals
        assert len(receiver.hits) <= tries + 1  # at most the try that was in flight
        assert live.runtime.webhooks.users == {}


async def test_a_receiver_that_never_answers_does_not_delay_relaying(
    settings: Settings,
) -> None:
    changes = {**FAST_RETRIES, "webhook_timeout_seconds": 30.0, "webhook_queue_size": 5}
    async with serving(settings, **changes) as world, receiving(None) as silent:
        async with receiving() as healthy:
            http, live = world.http, world.live
            alice = await make_account(http, "alice")
            pair = await make_pair(http, alice)
            await add_webhook(http, alice, silent.url, ["INCOMING_SMS"])
            await add_webhook(http, alice, healthy.url, ["INCOMING_SMS"])
            async with socket(live, pair.host) as host, socket(live, pair.client) as client:
                await send(host, sms("warm-up"))
                await receive(client)
                slowest = 0.0
                for n in range(40):
                    started = time.perf_counter()
                    await send(host, sms(f"n{n}"))
                    assert (await receive(client))["text"] == f"n{n}"
                    slowest = max(slowest, time.perf_counter() - started)
                # another receiver of the same account gets everything meanwhile
                await healthy.until(41)
            assert slowest < 0.5, slowest
            assert len(silent.hits) <= 4  # its concurrency: the rest wait (or were dropped)
            for target in live.runtime.webhooks.targets_of(alice.user_id):
                assert len(target.pending) <= 5 and len(target.ready) <= 10
            counts = live.runtime.metrics.counts
            assert counts.webhooks_dropped >= 40 - 5 - 4
            text = (await http.get("/metrics")).text
            assert "simbridge_webhook_deliveries_dropped_total" in text


async def test_a_try_in_flight_at_shutdown_is_stored_and_resumed(settings: Settings) -> None:
    """Its first try never failed, so only the shutdown writes it; the next server sends it."""
    changes = {**FAST_RETRIES, "webhook_timeout_seconds": 30.0}

    async def first_server(receiver: Receiver) -> Hit:
        async with serving(settings, **changes) as world:
            alice = await make_account(world.http, "alice")
            host = await make_device(world.http, alice, "host")
            await add_webhook(world.http, alice, receiver.url, ["INCOMING_SMS"])
            async with socket(world.live, host) as ws:
                await send(ws, sms("in flight"))
                [first] = await receiver.until(1)
            assert await WebhookDelivery.all().count() == 0  # not failed yet: not stored
        return first

    async def second_server(receiver: Receiver, first: Hit) -> None:
        async with serving(settings, **changes):
            hits = await receiver.until(2)
            assert hits[1].headers["x-simbridge-delivery"] == first.json["delivery_id"]
            assert hits[1].body == first.body
            for _ in range(50):
                if not await WebhookDelivery.all().count():
                    break
                await asyncio.sleep(0.05)
            assert await WebhookDelivery.all().count() == 0

    async with receiving(None) as receiver:
        # each server in a task of its own: Tortoise keeps its state in a context variable
        first = await asyncio.create_task(first_server(receiver), context=contextvars.Context())
        receiver.status = 200
        await asyncio.create_task(second_server(receiver, first), context=contextvars.Context())


async def test_pending_deliveries_survive_a_restart(servers: Servers) -> None:
    env = {
        "SIMBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        "SIMBRIDGE_WEBHOOK_FIRST_RETRY_SECONDS": "0.05",
        "SIMBRIDGE_WEBHOOK_MAX_RETRY_INTERVAL_SECONDS": "0.2",
        "SIMBRIDGE_WEBHOOK_TIMEOUT_SECONDS": "2",
    }
    async with receiving(500) as receiver:
        first = await servers.start(**env)
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
            alice = await make_account(http, "alice")
            host = await make_device(http, alice, "host")
            hook = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
            async with socket(first, host) as ws:
                await send(ws, sms("across a restart"))
                await receiver.until(2)
        assert await servers.stop(first) == 0
        delivery_id = receiver.hits[0].json["delivery_id"]
        tries = len(receiver.hits)
        receiver.status = 200
        second = await servers.start(**env)
        hits = await receiver.until(tries + 1, within=10)
        assert hits[-1].headers["x-simbridge-delivery"] == delivery_id
        assert hits[-1].body == hits[0].body
        assert verified(hits[-1], hook["secret"])
        await asyncio.sleep(0.5)
        assert len(receiver.hits) == tries + 1  # delivered once it got a 2xx
        assert await servers.stop(second) == 0


@pytest.mark.postgres
async def test_a_webhook_created_or_deleted_on_one_process_applies_on_the_other(
    servers: Servers, postgres_url: str
) -> None:
    """Two processes on Redis: a webhook created through A serves B's host at once, and once
    deleted through A, B sends nothing more (a control message, not a periodic reload)."""
    await require_redis()
    prefix = unique_prefix()
    env = {
        "DATABASE_URL": postgres_url,
        "SIMBRIDGE_BROKER": "redis",
        "REDIS_URL": REDIS_URL,
        "SIMBRIDGE_REDIS_PREFIX": prefix,
        "SIMBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    try:
        a = await servers.start(**env)
        b = await servers.start(**env)
        async with (
            receiving(200) as receiver,
            httpx.AsyncClient(base_url=a.url, timeout=10) as http,
        ):
            alice = await make_account(http, "alice")
            host = await make_device(http, alice, "host")
            hook = await add_webhook(http, alice, receiver.url, ["INCOMING_SMS"])
            async with socket(b, host) as ws:
                await send(ws, sms("through B"))
                hits = await receiver.until(1, within=2)
                assert verified(hits[0], hook["secret"])
                deleted = await http.delete(f"/webhooks/{hook['id']}", headers=alice.headers)
                assert deleted.status_code == 200
                await asyncio.sleep(0.3)  # the control message's way through Redis
                await send(ws, sms("after the delete"))
                await send(ws, sms("and once more"))
                await asyncio.sleep(1)
            assert len(receiver.hits) == 1
    finally:
        await servers.stop_all()
        await delete_keys(REDIS_URL, prefix)
