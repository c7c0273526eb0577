"""The socket rules of contract §4, on `simbridge serve --workers 2` (Redis, PostgreSQL).

Sanic hands each connection to either worker, so every case opens several devices: whatever
lands where, each must behave as on one process (test_scale_out.py places devices on two
separate processes deliberately).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.helpers import (
    Account,
    Device,
    Pair,
    assert_closed_with,
    assert_error,
    assert_marker_arrives_next,
    assert_relays,
    eventually,
    get_sims_command,
    handshake,
    is_online,
    make_account,
    make_device,
    make_pair,
    pair_devices,
    receive,
    send,
    sim_info_event,
    socket,
)
from tests.processes import SIMBRIDGE_SERVE, ServerProcess, Servers
from tests.redis_server import REDIS_URL, delete_keys, require_redis, unique_prefix

pytestmark = pytest.mark.postgres

PAIRS = 6  # sockets land on either worker: six pairs all on one worker has odds 2^-11
MAX_SOCKETS_PER_USER = 2 * PAIRS + 1


@dataclass
class Workers:
    server: ServerProcess
    http: httpx.AsyncClient
    alice: Account
    pairs: list[Pair]


async def open_sockets(
    stack: AsyncExitStack, server: ServerProcess, devices: Sequence[Device]
) -> list[ClientConnection]:
    """A socket for each device, greeted, closed when `stack` closes."""
    return [await stack.enter_async_context(socket(server, device)) for device in devices]


@pytest.fixture
async def workers(servers: Servers, postgres_url: str) -> AsyncIterator[Workers]:
    await require_redis()
    prefix = unique_prefix()
    try:
        server = await servers.start(
            (*SIMBRIDGE_SERVE, "--workers", "2"),
            DATABASE_URL=postgres_url,
            SIMBRIDGE_BROKER="redis",
            REDIS_URL=REDIS_URL,
            SIMBRIDGE_REDIS_PREFIX=prefix,
            SIMBRIDGE_MAX_SOCKETS_PER_USER=str(MAX_SOCKETS_PER_USER),
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            alice = await make_account(http, "alice")
            pairs = [await make_pair(http, alice) for _ in range(PAIRS)]
            yield Workers(server, http, alice, pairs)
    finally:
        await servers.stop_all()
        await delete_keys(REDIS_URL, prefix)


async def test_every_pair_relays_and_is_online_whatever_worker_holds_it(workers: Workers) -> None:
    for index, pair in enumerate(workers.pairs):
        async with socket(workers.server, pair.host) as host_ws:
            async with socket(workers.server, pair.client) as client_ws:
                assert await is_online(workers.http, pair.host)
                assert await is_online(workers.http, pair.client)
                await assert_relays(host_ws, client_ws, f"pair-{index}")
            await send(host_ws, sim_info_event("nobody-listens"))
            assert (await receive(host_ws))["error"] == "target_offline"


async def test_answers_go_to_the_asker_and_unsolicited_events_to_every_client(
    workers: Workers,
) -> None:
    host = workers.pairs[0].host
    clients = [workers.pairs[0].client]
    for _ in range(3):
        client = await make_device(workers.http, workers.alice, "client")
        await pair_devices(workers.http, workers.alice, host, client)
        clients.append(client)
    async with AsyncExitStack() as stack:
        host_ws, *sockets = await open_sockets(stack, workers.server, [host, *clients])
        for index, asker_ws in enumerate(sockets):
            req_id = f"ask-{index}"
            await send(asker_ws, get_sims_command(req_id))
            assert await receive(host_ws) == get_sims_command(req_id)
            await send(host_ws, sim_info_event(req_id))
            assert await receive(asker_ws) == sim_info_event(req_id)
            for other, other_ws in zip(clients, sockets, strict=True):
                if other_ws is not asker_ws:
                    await assert_marker_arrives_next(host_ws, other, other_ws)
        unsolicited = {"type": "event", "event": "SMS_RECEIVED", "from": "+1", "body": "hi"}
        await send(host_ws, unsolicited)
        for client_ws in sockets:
            assert await receive(client_ws) == unsolicited


async def test_a_second_socket_of_a_device_replaces_the_first_whichever_worker(
    workers: Workers,
) -> None:
    for pair in workers.pairs:
        async with socket(workers.server, pair.client) as client_ws:
            async with socket(workers.server, pair.host) as first:
                async with socket(workers.server, pair.host) as second:
                    await assert_closed_with(first, 4000, "replaced")
                    await send(client_ws, get_sims_command("to-the-new-one"))
                    assert await receive(second) == get_sims_command("to-the-new-one")


async def test_logout_all_closes_every_socket_and_the_new_token_opens_at_once(
    workers: Workers,
) -> None:
    devices = [device for pair in workers.pairs for device in (pair.host, pair.client)]
    async with AsyncExitStack() as stack:
        sockets = await open_sockets(stack, workers.server, devices)
        reply = await workers.http.post("/auth/logout-all", headers=workers.alice.headers)
        assert reply.status_code == 200
        for ws in sockets:
            await assert_closed_with(ws, 4001)
    refused = await handshake(workers.server, devices[0], workers.alice.token)
    assert refused.status == 401
    fresh = replace(workers.alice, token=reply.json()["token"])
    for pair in workers.pairs:  # whichever worker takes it, the fresh token is good at once
        host, client = replace(pair.host, owner=fresh), replace(pair.client, owner=fresh)
        async with socket(workers.server, host) as host_ws, socket(workers.server, client) as ws:
            await assert_relays(host_ws, ws, "fresh")


async def test_a_deleted_device_is_closed_and_a_rest_command_reaches_any_host(
    workers: Workers,
) -> None:
    for pair in workers.pairs:
        async with socket(workers.server, pair.host) as host_ws:
            reply = await workers.http.get(
                "/sims", params={"host_device_id": pair.host.id}, headers=workers.alice.headers
            )
            assert reply.status_code == 200, reply.text
            assert await receive(host_ws) == get_sims_command(reply.json()["req_id"])
    victim = workers.pairs[0].client
    async with socket(workers.server, victim) as ws:
        deleted = await workers.http.delete(f"/devices/{victim.id}", headers=workers.alice.headers)
        assert deleted.status_code in (200, 204)
        await assert_closed_with(ws, 4002)
    offline = await workers.http.get(
        "/sims", params={"host_device_id": workers.pairs[1].host.id}, headers=workers.alice.headers
    )
    assert_error(offline, 503)


async def test_the_socket_cap_counts_the_sockets_of_both_workers(workers: Workers) -> None:
    extra = [await make_device(workers.http, workers.alice, "client") for _ in range(3)]
    devices = [d for pair in workers.pairs for d in (pair.host, pair.client)] + extra
    one_too_many = devices[MAX_SOCKETS_PER_USER]

    async def opens() -> bool:
        reply = await handshake(workers.server, one_too_many, workers.alice.token)
        return reply.status == 101

    async with AsyncExitStack() as stack:
        opened = await open_sockets(stack, workers.server, devices[:MAX_SOCKETS_PER_USER])
        over = await handshake(workers.server, one_too_many, workers.alice.token)
        assert over.status == 429
        await opened[0].close()
        assert await eventually(opens)
