"""Regressions found in review: correlation under id clashes, rate buckets across reconnects,
frames too deep for the standard parser, SQLite folders named by DATABASE_URL, revocations
racing a handshake."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx

from simbridge.config import Settings
from simbridge.db import apply_migrations
from simbridge.models import DeviceType
from simbridge.security import device_token_digest
from simbridge.services.admission import Admission
from tests.helpers import (
    Account,
    LiveServer,
    Pair,
    make_account,
    make_device,
    nothing_arrives,
    pair_devices,
    receive,
    send,
    socket,
)

SIM_INFO = {"type": "event", "event": "SIM_INFO", "sims": []}


async def test_answer_to_req_id_used_by_two_clients_reaches_both(settings: Settings) -> None:
    async with LiveServer.running(settings) as live, httpx.AsyncClient(base_url=live.url) as http:
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        phone = await make_device(http, alice, "client")
        laptop = await make_device(http, alice, "client")
        await pair_devices(http, alice, host, phone)
        await pair_devices(http, alice, host, laptop)
        async with socket(live, host) as h, socket(live, phone) as p, socket(live, laptop) as lt:
            for client in (p, lt):
                await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "1"})
                await receive(h)
            await send(h, {**SIM_INFO, "req_id": "1"})
            assert await receive(p) == {**SIM_INFO, "req_id": "1"}
            assert await receive(lt) == {**SIM_INFO, "req_id": "1"}


async def test_answer_to_overlong_req_id_is_fanned_out(settings: Settings) -> None:
    long_id = "r" * 200
    async with LiveServer.running(settings) as live, httpx.AsyncClient(base_url=live.url) as http:
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        asker = await make_device(http, alice, "client")
        other = await make_device(http, alice, "client")
        await pair_devices(http, alice, host, asker)
        await pair_devices(http, alice, host, other)
        async with socket(live, host) as h, socket(live, asker) as a, socket(live, other) as o:
            await send(a, {"type": "command", "cmd": "GET_SIMS", "req_id": long_id})
            await receive(h)
            await send(h, {**SIM_INFO, "req_id": long_id})
            assert await receive(o) == {**SIM_INFO, "req_id": long_id}  # not correlated
            assert await receive(a) == {**SIM_INFO, "req_id": long_id}


async def test_reconnect_does_not_refill_rate_bucket(settings: Settings) -> None:
    limited = replace(settings, ws_messages_per_second=0.001, ws_message_burst=3)
    async with LiveServer.running(limited) as live, httpx.AsyncClient(base_url=live.url) as http:
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        client = await make_device(http, alice, "client")
        await pair_devices(http, alice, host, client)
        async with socket(live, host) as h:
            async with socket(live, client) as c:
                for n in range(3):
                    await send(c, {"type": "command", "cmd": "GET_SIMS", "req_id": f"a{n}"})
                    await receive(h)
            async with socket(live, client) as c:
                await send(c, {"type": "command", "cmd": "GET_SIMS", "req_id": "again"})
                assert await receive(c) == {"error": "rate_limited", "req_id": "again"}
                assert await nothing_arrives(h)


async def test_rate_limited_frame_too_deep_for_stdlib_keeps_socket_open(
    settings: Settings,
) -> None:
    limited = replace(settings, ws_messages_per_second=0.001, ws_message_burst=1)
    deep = '{"type":"ping","req_id":1.5,"x":' + "[" * 990 + "]" * 990 + "}"
    async with LiveServer.running(limited) as live, httpx.AsyncClient(base_url=live.url) as http:
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        async with socket(live, host) as h:
            await send(h, {"type": "ping"})
            assert await receive(h) == {"type": "pong"}
            await h.send(deep)
            assert await receive(h) == {"error": "rate_limited", "req_id": 1.5}
            await h.send(deep)  # the socket is still open and answering
            assert await receive(h) == {"error": "rate_limited", "req_id": 1.5}


async def test_migrate_creates_folder_of_sqlite_database_url(tmp_path: Path) -> None:
    target = tmp_path / "not" / "there" / "yet.db"
    settings = Settings(jwt_secret="x" * 40, database_url=f"sqlite://{target}")

    assert await apply_migrations(settings)
    assert target.is_file()


async def test_admission_is_void_once_its_token_is_revoked(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    """Checked once the socket is registered, so a revocation racing the handshake wins."""
    owner = pair.host.owner
    admitted = Admission(owner.user_id, DeviceType.HOST, token_version=0)
    assert await admitted.still_valid(pair.host.id)

    assert (await http.post("/auth/logout-all", headers=owner.headers)).status_code == 200

    assert not await admitted.still_valid(pair.host.id)


async def test_admission_by_device_token_is_void_once_rotated(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    created = await http.post("/devices", json={"name": "h", "type": "host"}, headers=alice.headers)
    device_id, token = created.json()["id"], created.json()["device_token"]
    admitted = Admission(alice.user_id, DeviceType.HOST, None, device_token_digest(token))
    assert await admitted.still_valid(device_id)

    rotated = await http.post(f"/devices/{device_id}/token", headers=alice.headers)
    assert rotated.status_code == 200

    assert not await admitted.still_valid(device_id)
