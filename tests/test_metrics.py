"""`GET /metrics` (contract §9, docs/metrics.md): Prometheus text, parsed with prometheus-client's
own parser, from a real server on 127.0.0.1 with real host and client sockets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simbridge.config import Settings
from simbridge.metrics import FRAME_ERRORS, LATENCY_SAMPLE_EVERY
from tests.helpers import (
    LiveServer,
    Pair,
    assert_error,
    assert_relays,
    eventually,
    get_sims_command,
    handshake,
    make_account,
    make_device,
    make_pair,
    receive,
    send,
    serving,
    sim_info_event,
    socket,
)
from tests.processes import SIMBRIDGE_SERVE, Servers
from tests.redis_server import REDIS_URL, delete_keys, require_redis, unique_prefix

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"
MSG_TYPE_LABELS = {"command", "event", "other"}
ERROR_LABELS = {*FRAME_ERRORS, "other"}


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (prometheus-client's parser)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(http: httpx.AsyncClient, token: str | None = None) -> Samples:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    reply = await http.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain"), reply.headers
    return parse(reply.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; a missing sample fails (it is not taken for 0)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in samples if sample == name}


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew; it must be in `after` (in `before`, a labelled counter may not
    have been seen yet)."""
    return value(after, name, **labels) - before.get((name, frozenset(labels.items())), 0.0)


RELAYED = "simbridge_frames_relayed_total"
ERRORS = "simbridge_frame_errors_total"
CONNECTIONS = "simbridge_connections"
REQUESTS = "simbridge_http_requests_total"
LATENCY_COUNT = "simbridge_relay_latency_seconds_count"


async def test_every_metric_of_the_contract_is_there_with_its_type(http: httpx.AsyncClient) -> None:
    reply = await http.get("/metrics")
    assert reply.status_code == 200
    types = {family.name: family.type for family in text_string_to_metric_families(reply.text)}
    assert types == {
        "simbridge_connections": "gauge",
        "simbridge_frames_relayed": "counter",
        "simbridge_frame_errors": "counter",
        "simbridge_relay_latency_seconds": "histogram",
        "simbridge_http_requests": "counter",
        "simbridge_log_queue_rows": "gauge",
        "simbridge_webhook_deliveries_dropped": "counter",  # docs/webhooks.md
    }
    # HELP is written for each (docs/metrics.md says more)
    assert reply.text.count("# HELP simbridge_") == len(types)


async def test_relaying_n_frames_moves_the_counters_by_exactly_n(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    frames = 2 * LATENCY_SAMPLE_EVERY  # commands and answers: 4 x 16 frames
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "warm-up")
        before = await scrape(http)
        for index in range(frames):
            await assert_relays(host_ws, client_ws, f"r{index}")
        after = await scrape(http)
    assert delta(before, after, RELAYED, msg_type="command") == frames
    assert delta(before, after, RELAYED, msg_type="event") == frames
    assert label_values(after, RELAYED, "msg_type") == MSG_TYPE_LABELS
    # one frame in 16 is timed: any 64 frames in a row hold exactly 4 of them
    assert delta(before, after, LATENCY_COUNT) == 2 * frames / LATENCY_SAMPLE_EVERY
    inf = delta(before, after, "simbridge_relay_latency_seconds_bucket", le="+Inf")
    assert inf == delta(before, after, LATENCY_COUNT)
    assert delta(before, after, "simbridge_relay_latency_seconds_sum") > 0
    assert sum(delta(before, after, ERRORS, error=e) for e in ERROR_LABELS) == 0


async def test_a_rest_command_and_a_fan_out_count_each_delivery(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    owner = pair.host.owner
    second = await make_device(http, owner, "client")
    code = (await http.post(f"/pair?host_device_id={pair.host.id}", headers=owner.headers)).json()
    confirmed = await http.post(
        "/pair/confirm",
        json={"code": code["code"], "client_device_id": second.id},
        headers=owner.headers,
    )
    assert confirmed.status_code == 200
    async with AsyncExitStack() as stack:
        host_ws = await stack.enter_async_context(socket(server, pair.host))
        first_ws = await stack.enter_async_context(socket(server, pair.client))
        second_ws = await stack.enter_async_context(socket(server, second))
        before = await scrape(http)
        reply = await http.get(
            "/sims", params={"host_device_id": pair.host.id}, headers=owner.headers
        )
        assert reply.status_code == 200, reply.text
        assert (await receive(host_ws))["cmd"] == "GET_SIMS"
        unsolicited = {"type": "event", "event": "SMS_RECEIVED", "from": "+1", "body": "hi"}
        await send(host_ws, unsolicited)
        assert await receive(first_ws) == unsolicited
        assert await receive(second_ws) == unsolicited
        after = await scrape(http)
    assert delta(before, after, RELAYED, msg_type="command") == 1
    assert delta(before, after, RELAYED, msg_type="event") == 2  # one per client


async def test_connections_follow_real_sockets_up_and_down(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async def connections() -> tuple[float, float]:
        now = await scrape(http)
        return value(now, CONNECTIONS, type="host"), value(now, CONNECTIONS, type="client")

    assert await connections() == (0, 0)
    async with socket(server, pair.host):
        assert await connections() == (1, 0)
        async with socket(server, pair.client):
            assert await connections() == (1, 1)
        assert await eventually(lambda: _equals(connections(), (1, 0)))
    assert await eventually(lambda: _equals(connections(), (0, 0)))
    assert label_values(await scrape(http), CONNECTIONS, "type") == {"host", "client"}


async def _equals(awaitable: object, expected: object) -> bool:
    assert asyncio.isfuture(awaitable) or asyncio.iscoroutine(awaitable)
    return bool(await awaitable == expected)


async def test_frame_errors_are_counted_under_a_fixed_set_of_labels(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    """Garbage and unknown types from a device count, and never become label values."""
    hostile = 'x"}\n# EVIL{a="b"} 1\n'
    frames: list[str] = [
        "not json at all",
        "{" + hostile,
        json.dumps({"type": hostile}),
        json.dumps({"type": "other"}),
        json.dumps({"type": ["command"]}),
        json.dumps(get_sims_command("np", to_device_id=999_999)),
        json.dumps(get_sims_command("pol", offline=hostile)),
        json.dumps({"type": "event", "event": hostile, "to_device_id": 999_999}),
        '{"type":"ping","x":' + "[" * 64 + "]" * 64 + "}",
    ]
    async with socket(server, pair.client) as client_ws:
        before = await scrape(http)
        for raw in frames:
            await client_ws.send(raw)
            assert "error" in await receive(client_ws), raw
        await send(client_ws, get_sims_command("offline"))  # the host is not connected
        assert (await receive(client_ws))["error"] == "target_offline"
        after = await scrape(http)
    expected = {
        "invalid_json": 2,
        "unknown_type": 3,
        "not_paired": 2,
        "invalid_offline_policy": 1,
        "too_deep": 1,
        "target_offline": 1,
    }
    counted = {
        error: delta(before, after, ERRORS, error=error)
        for error in ERROR_LABELS
        if delta(before, after, ERRORS, error=error)
    }
    assert counted == expected
    assert label_values(after, ERRORS, "error") == ERROR_LABELS
    assert label_values(after, RELAYED, "msg_type") == MSG_TYPE_LABELS
    reply = await http.get("/metrics")
    assert "EVIL" not in reply.text and "hostile" not in reply.text


async def test_rate_limited_frames_are_counted(settings: Settings) -> None:
    async with serving(settings, ws_message_burst=3, ws_messages_per_second=0.001) as served:
        alice = await make_account(served.http, "alice")
        pair = await make_pair(served.http, alice)
        async with socket(served.live, pair.client) as client_ws:
            before = await scrape(served.http)
            for _ in range(5):
                await send(client_ws, {"type": "ping"})
            replies = [await receive(client_ws) for _ in range(5)]
            after = await scrape(served.http)
    assert [r.get("error") for r in replies].count("rate_limited") == 2
    assert delta(before, after, ERRORS, error="rate_limited") == 2


async def test_http_requests_are_counted_by_route_pattern_not_path(
    http: httpx.AsyncClient, pair: Pair
) -> None:
    owner = pair.host.owner
    before = await scrape(http)
    for device in (pair.host, pair.client):
        reply = await http.post(f"/devices/{device.id}/token", headers=owner.headers)
        assert reply.status_code == 200, reply.text
    missing = await http.post("/devices/987654/token", headers=owner.headers)
    assert missing.status_code == 404
    for path in ("/no/such/place/555", "/no/such/place/666"):
        assert (await http.get(path)).status_code == 404
    assert (await http.get("/history", params={"device_id": 424242})).status_code == 401
    after = await scrape(http)
    pattern = "/devices/<device_id:int>/token"
    assert delta(before, after, REQUESTS, route=pattern, status="200") == 2
    assert delta(before, after, REQUESTS, route=pattern, status="404") == 1
    assert delta(before, after, REQUESTS, route="unmatched", status="404") == 2
    assert delta(before, after, REQUESTS, route="/history", status="401") == 1
    assert value(after, REQUESTS, route="/metrics", status="200") >= 1
    routes = label_values(after, REQUESTS, "route")
    for concrete in (str(pair.host.id), "987654", "555", "666", "424242", "/no/such"):
        assert not any(concrete in route for route in routes), (concrete, routes)


async def test_log_queue_rows_shows_rows_waiting_for_the_database(settings: Settings) -> None:
    async with serving(settings, log_flush_seconds=2.0) as served:  # nothing written meanwhile
        alice = await make_account(served.http, "alice")
        pair = await make_pair(served.http, alice)
        async with socket(served.live, pair.host) as host_ws:
            async with socket(served.live, pair.client) as client_ws:
                for index in range(7):
                    event = {"type": "event", "event": "SMS_RECEIVED", "body": f"n{index}"}
                    await send(host_ws, event)
                    assert await receive(client_ws) == event
                now = await scrape(served.http)
                assert value(now, "simbridge_log_queue_rows") == 7
                await served.live.runtime.writer.flush()
                assert value(await scrape(served.http), "simbridge_log_queue_rows") == 0


# --- the token ---------------------------------------------------------------------------------
@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, metrics_token=METRICS_TOKEN) as served:
        yield served.http


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token-of-some-length",
        f"Basic {METRICS_TOKEN}",
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN[:-1]}",
    ],
)
async def test_metrics_token_refuses_missing_or_wrong_with_401(
    guarded: httpx.AsyncClient, authorization: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with caplog.at_level(logging.DEBUG):
        reply = await guarded.get("/metrics", headers=headers)
    assert_error(reply, 401)
    assert "simbridge_" not in reply.text
    assert METRICS_TOKEN not in caplog.text


async def test_metrics_token_lets_its_holder_in(
    guarded: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        samples = await scrape(guarded, METRICS_TOKEN)
    assert value(samples, CONNECTIONS, type="host") == 0
    assert METRICS_TOKEN not in caplog.text


async def test_without_a_token_setting_metrics_are_open(http: httpx.AsyncClient) -> None:
    assert (await http.get("/metrics")).status_code == 200


# --- several workers ---------------------------------------------------------------------------
PAIRS = 6  # sockets land on either worker: all twelve on one worker has odds 2^-11


@pytest.mark.postgres
async def test_workers_scrape_adds_up_every_worker(servers: Servers, postgres_url: str) -> None:
    """`serve --workers 2`: whichever worker answers, connections and frames of both are in
    the totals (the other worker's as of its last snapshot, at most about a second old). Each
    worker alone holds some of the twelve sockets (all on one: odds 2^-11), so a scrape that
    showed one worker's values only would fail."""
    await require_redis()
    prefix = unique_prefix()
    try:
        server = await servers.start(
            (*SIMBRIDGE_SERVE, "--workers", "2"),
            DATABASE_URL=postgres_url,
            SIMBRIDGE_BROKER="redis",
            REDIS_URL=REDIS_URL,
            SIMBRIDGE_REDIS_PREFIX=prefix,
            SIMBRIDGE_MAX_SOCKETS_PER_USER=str(2 * PAIRS + 1),
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            alice = await make_account(http, "alice")
            pairs = [await make_pair(http, alice) for _ in range(PAIRS)]
            async with AsyncExitStack() as stack:
                for index, pair in enumerate(pairs):
                    host_ws = await stack.enter_async_context(socket(server, pair.host))
                    client_ws = await stack.enter_async_context(socket(server, pair.client))
                    await send(client_ws, get_sims_command(f"w{index}"))
                    assert await receive(host_ws) == get_sims_command(f"w{index}")
                    await send(host_ws, sim_info_event(f"w{index}"))
                    assert await receive(client_ws) == sim_info_event(f"w{index}")

                async def totals() -> tuple[float, ...]:
                    # a fresh connection each time: either worker may answer
                    async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                        now = await scrape(fresh)
                    return (
                        value(now, CONNECTIONS, type="host"),
                        value(now, CONNECTIONS, type="client"),
                        value(now, RELAYED, msg_type="command"),
                        value(now, RELAYED, msg_type="event"),
                    )

                async def steadily(expected: tuple[float, ...]) -> bool:
                    """Eight scrapes in a row show `expected`, whichever workers answer them
                    (once every worker has published since the last change)."""
                    return all([await totals() == expected for _ in range(8)])

                expected = (PAIRS, PAIRS, PAIRS, PAIRS)
                assert await eventually(lambda: steadily(expected), timeout=15)
            assert await eventually(lambda: steadily((0, 0, PAIRS, PAIRS)), timeout=15)
    finally:
        await servers.stop_all()
        await delete_keys(REDIS_URL, prefix)


async def test_socket_handshakes_refused_are_requests_and_accepted_are_connections(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    before = await scrape(http)
    assert (await handshake(server, pair.host, "not-a-token")).status == 401
    assert (await handshake(server, pair.host, pair.host.owner.token)).status == 101
    after = await scrape(http)
    route = "/ws/host/<device_id:int>"
    assert delta(before, after, REQUESTS, route=route, status="401") == 1
    assert (REQUESTS, frozenset({("route", route), ("status", "101")})) not in after


async def test_a_frame_that_fails_inside_the_server_counts_as_internal_error(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> str | None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(server.runtime.relay, "_route_command", broken)
    async with socket(server, pair.client) as client_ws:
        before = await scrape(http)
        await send(client_ws, get_sims_command("boom"))
        assert await receive(client_ws) == {"error": "internal error"}
        after = await scrape(http)
    assert delta(before, after, ERRORS, error="internal_error") == 1
