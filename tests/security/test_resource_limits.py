"""Resource limits against a real server: devices per user, live pairing codes, JSON nesting
depth, body and frame size, history page size. Each refusal is a clear 4xx or close code."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.helpers import (
    Account,
    Device,
    assert_error,
    assert_next_is_pong,
    assert_rest_marker_arrives_next,
    assert_too_many,
    list_devices,
    make_account,
    make_device,
    pair_devices,
    paired_world,
    receive,
    send,
    serving,
    socket,
)

DEPTH = 8


def nested(levels: int) -> Any:
    """`levels` levels of alternating lists and objects: `nested(3) == [{"a": []}]`."""
    value: Any = [] if levels % 2 else {}
    for level in range(levels - 1, 0, -1):
        value = [value] if level % 2 else {"a": value}
    return value


async def device_names(http: httpx.AsyncClient, owner: Account) -> list[str]:
    return [row["name"] for row in await list_devices(http, owner)]


async def new_code(http: httpx.AsyncClient, owner: Account, host: Device) -> httpx.Response:
    return await http.post(f"/pair?host_device_id={host.id}", headers=owner.headers)


# --- devices per user -------------------------------------------------------------------------
async def test_add_device_over_user_limit_returns_409_and_creates_nothing(
    settings: Settings,
) -> None:
    async with serving(settings, max_devices_per_user=2) as srv:
        alice = await make_account(srv.http, "alice")
        first = await make_device(srv.http, alice, "host", "first")
        await make_device(srv.http, alice, "client", "second")

        reply = await srv.http.post(
            "/devices", json={"name": "third", "type": "host"}, headers=alice.headers
        )
        assert "2" in assert_error(reply, 409)
        assert await device_names(srv.http, alice) == ["first", "second"]

        # The cap is per user, and deleting a device frees its place.
        bob = await make_account(srv.http, "bob")
        await make_device(srv.http, bob, "host")
        deleted = await srv.http.delete(f"/devices/{first.id}", headers=alice.headers)
        assert deleted.status_code == 200, deleted.text
        await make_device(srv.http, alice, "host", "third")
        assert await device_names(srv.http, alice) == ["second", "third"]


# --- live pairing codes -----------------------------------------------------------------------
async def test_create_pairing_code_over_host_limit_returns_429_until_oldest_expires(
    settings: Settings, clock: ManualClock
) -> None:
    async with serving(
        settings,
        max_live_codes_per_host=2,
        max_live_codes_per_user=10,
        pairing_code_ttl_seconds=600,
    ) as srv:
        alice = await make_account(srv.http, "alice")
        host = await make_device(srv.http, alice, "host")
        assert (await new_code(srv.http, alice, host)).status_code == 200
        clock.advance(100)
        assert (await new_code(srv.http, alice, host)).status_code == 200

        assert assert_too_many(await new_code(srv.http, alice, host)) == 500  # the oldest has 500 s
        clock.advance(499)
        assert assert_too_many(await new_code(srv.http, alice, host)) == 1

        clock.advance(1)
        reply = await new_code(srv.http, alice, host)
        assert reply.status_code == 200, reply.text
        assert reply.json()["expires_in_seconds"] == 600


async def test_create_pairing_code_over_user_limit_across_hosts_returns_429(
    settings: Settings,
) -> None:
    async with serving(
        settings,
        max_live_codes_per_host=10,
        max_live_codes_per_user=3,
        pairing_code_ttl_seconds=600,
    ) as srv:
        alice = await make_account(srv.http, "alice")
        first, second, third = [
            await make_device(srv.http, alice, "host", f"host-{n}") for n in range(3)
        ]
        for host in (first, first, second):
            reply = await new_code(srv.http, alice, host)
            assert reply.status_code == 200, reply.text

        for host in (first, second, third):
            assert assert_too_many(await new_code(srv.http, alice, host)) == 600
        # Another account has its own allowance.
        bob = await make_account(srv.http, "bob")
        bobs_host = await make_device(srv.http, bob, "host")
        assert (await new_code(srv.http, bob, bobs_host)).status_code == 200


async def test_create_pairing_code_after_one_is_spent_succeeds(settings: Settings) -> None:
    async with serving(
        settings, max_live_codes_per_host=1, max_live_codes_per_user=1, pairing_code_ttl_seconds=600
    ) as srv:
        alice = await make_account(srv.http, "alice")
        host = await make_device(srv.http, alice, "host")
        client = await make_device(srv.http, alice, "client")
        await pair_devices(srv.http, alice, host, client)  # creates and spends the only code

        reply = await new_code(srv.http, alice, host)
        assert reply.status_code == 200, reply.text
        assert assert_too_many(await new_code(srv.http, alice, host)) > 0


# --- JSON nesting depth -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/devices", {"name": "phone", "type": "host"}),
        ("/auth/login", {"username": "alice", "password": "secret123"}),
    ],
)
async def test_post_body_nested_deeper_than_limit_returns_400(
    settings: Settings, path: str, body: dict[str, Any]
) -> None:
    async with serving(settings, max_json_depth=DEPTH) as srv:
        alice = await make_account(srv.http, "alice")
        too_deep = {**body, "pad": nested(DEPTH)}  # the body object is one more level

        reply = await srv.http.post(path, json=too_deep, headers=alice.headers)
        detail = assert_error(reply, 400)
        assert str(DEPTH) in detail and "deep" in detail.lower()
        assert await device_names(srv.http, alice) == []

        at_limit = {**body, "pad": nested(DEPTH - 1)}
        reply = await srv.http.post(path, json=at_limit, headers=alice.headers)
        assert reply.status_code == 200, reply.text


async def test_send_frame_nested_deeper_than_limit_returns_error_and_relays_nothing(
    settings: Settings,
) -> None:
    async with paired_world(settings, max_json_depth=DEPTH) as world:
        async with (
            socket(world.live, world.pair.host) as host_ws,
            socket(world.live, world.pair.client) as client_ws,
        ):
            deep = {"type": "command", "cmd": "GET_SIMS", "req_id": "deep", "data": nested(DEPTH)}
            await send(client_ws, deep)
            assert await receive(client_ws) == {"error": "too deeply nested", "max_depth": DEPTH}

            # The socket stays open and frames at exactly the limit are relayed: the next thing
            # the host gets (the deep frame never reached it).
            at_limit = {**deep, "req_id": "at-limit", "data": nested(DEPTH - 1)}
            await send(client_ws, at_limit)
            assert await receive(host_ws) == at_limit
            await assert_next_is_pong(client_ws)


# --- sizes ------------------------------------------------------------------------------------
async def test_post_body_over_max_body_bytes_returns_413(settings: Settings) -> None:
    async with serving(settings, max_body_bytes=1024) as srv:
        await make_account(srv.http, "alice")
        oversized = {"username": "alice", "password": "x" * 2048}
        assert_error(await srv.http.post("/auth/login", json=oversized), 413)

        under = {"username": "alice", "password": "x" * 900}
        assert_error(await srv.http.post("/auth/login", json=under), 401)


async def test_send_frame_over_max_message_bytes_closes_with_1009(settings: Settings) -> None:
    async with paired_world(settings, max_message_bytes=1024) as world:
        async with socket(world.live, world.pair.host) as host_ws:
            async with socket(world.live, world.pair.client) as client_ws:
                fits = {"type": "command", "cmd": "SEND_SMS", "req_id": "fits", "body": "x" * 900}
                await send(client_ws, fits)
                assert await receive(host_ws) == fits

                await client_ws.send(json.dumps({**fits, "req_id": "big", "body": "x" * 2048}))
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(client_ws)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1009
            await assert_rest_marker_arrives_next(world.http, world.pair.host, host_ws)
