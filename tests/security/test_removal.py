"""Taking access away: `DELETE /devices/{id}`, `GET /pairings`, `DELETE /pairings/{id}`.

Each removal must take effect at once, on the live sockets and in the relay's in-memory pairing
cache, not only in the database: every routing test first relays one message so the cache is
warm, then removes, then checks the very next message. Someone else's ids are 404, byte for
byte what a never-created id gets (no existence oracle).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from simbridge.protocol import CLOSE_REMOVED
from tests.helpers import (
    Account,
    LiveServer,
    Pair,
    Reply,
    assert_closed_with,
    assert_error,
    assert_next_is_pong,
    assert_relays,
    get_sims_command,
    handshake,
    history,
    list_devices,
    make_device,
    make_device_with_token,
    make_pair,
    pair_devices,
    receive,
    send,
    sim_info_event,
    socket,
)

MISSING_ID = 999_999  # no device or pairing of any test gets this far
NO_PAIRED_HOST = {"error": "no paired host"}
NO_PAIRED_CLIENT = {"error": "no paired client"}
DELETED = {"status": "deleted"}


# --- helpers ----------------------------------------------------------------------------------
async def delete_device(http: httpx.AsyncClient, caller: Account, device_id: int | str) -> Reply:
    return Reply.of(await http.delete(f"/devices/{device_id}", headers=caller.headers))


async def delete_pairing(http: httpx.AsyncClient, caller: Account, pairing_id: int | str) -> Reply:
    return Reply.of(await http.delete(f"/pairings/{pairing_id}", headers=caller.headers))


async def rotate_token(http: httpx.AsyncClient, caller: Account, device_id: int | str) -> Reply:
    return Reply.of(await http.post(f"/devices/{device_id}/token", headers=caller.headers))


async def device_ids(http: httpx.AsyncClient, owner: Account) -> list[int]:
    return [device["id"] for device in await list_devices(http, owner)]


async def pairings(http: httpx.AsyncClient, owner: Account) -> list[dict[str, Any]]:
    reply = await http.get("/pairings", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    listed = reply.json()
    assert isinstance(listed, list)
    return listed


# --- DELETE /devices/{id}: the owner ------------------------------------------------------------
async def test_delete_device_owner_returns_deleted_and_unlists_it(
    http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    reply = await delete_device(http, alice, pair.host.id)

    assert reply.status == 200, reply
    assert reply.body == DELETED
    assert await device_ids(http, alice) == [pair.client.id]
    assert_error(await delete_device(http, alice, pair.host.id), 404)  # gone: not deletable twice


async def test_delete_device_closes_its_live_socket_with_4002(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        assert (await delete_device(http, alice, pair.host.id)).body == DELETED

        await assert_closed_with(host_ws, CLOSE_REMOVED, "device removed")
        await assert_next_is_pong(client_ws)  # the other device's socket is untouched


async def test_delete_host_stops_routing_from_its_client_at_once(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before")

        assert (await delete_device(http, alice, pair.host.id)).body == DELETED

        await send(client_ws, get_sims_command("after"))
        assert await receive(client_ws) == NO_PAIRED_HOST
        await send(client_ws, get_sims_command("after-named", to_device_id=pair.host.id))
        assert await receive(client_ws) == {"error": "not paired", "target_device_id": pair.host.id}
    assert await pairings(http, alice) == []


async def test_delete_client_stops_routing_from_its_host_at_once(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before")

        assert (await delete_device(http, alice, pair.client.id)).body == DELETED

        # The answer to the client's earlier command has nobody to go to any more.
        await send(host_ws, sim_info_event("before"))
        assert await receive(host_ws) == NO_PAIRED_CLIENT
        await send(host_ws, sim_info_event("unsolicited"))
        assert await receive(host_ws) == NO_PAIRED_CLIENT
        await send(host_ws, sim_info_event("named", to_device_id=pair.client.id))
        assert await receive(host_ws) == {
            "error": "not paired",
            "target_device_id": pair.client.id,
        }
        await assert_closed_with(client_ws, CLOSE_REMOVED)
    assert await pairings(http, alice) == []


async def test_delete_first_host_routes_next_command_to_remaining_host(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    second_host = await make_device(http, alice, "host", "alice-second-host")
    second = await pair_devices(http, alice, second_host, pair.client)
    async with (
        socket(server, pair.host) as first_ws,
        socket(server, second_host) as second_ws,
        socket(server, pair.client) as client_ws,
    ):
        await assert_relays(first_ws, client_ws, "before")  # the lowest pairing wins

        assert (await delete_device(http, alice, pair.host.id)).body == DELETED

        await send(client_ws, get_sims_command("after"))
        assert await receive(second_ws) == get_sims_command("after")
    assert [listed["id"] for listed in await pairings(http, alice)] == [second.pairing_id]


async def test_delete_device_refuses_its_old_credentials_at_handshake(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, device_token = await make_device_with_token(http, alice, "host")
    assert (await handshake(server, host, alice.token)).status == 101
    assert (await handshake(server, host, device_token)).status == 101

    assert (await delete_device(http, alice, host.id)).body == DELETED

    assert (await handshake(server, host, alice.token)).status == 404
    assert (await handshake(server, host, device_token)).status == 401


async def test_delete_device_keeps_history_of_other_device(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "kept")
    before = await history(http, alice, pair.client)
    assert [row["payload"] for row in before] == [sim_info_event("kept"), get_sims_command("kept")]

    assert (await delete_device(http, alice, pair.host.id)).body == DELETED

    after = await history(http, alice, pair.client)
    assert [(row["id"], row["msg_type"], row["payload"]) for row in after] == [
        (row["id"], row["msg_type"], row["payload"]) for row in before
    ]
    assert all(pair.host.id not in (row["from_device_id"], row["to_device_id"]) for row in after)
    reply = await http.get("/history", params={"device_id": pair.host.id}, headers=alice.headers)
    assert_error(reply, 404)


async def test_delete_device_never_hands_its_id_to_a_new_device(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> None:
    """The newest device is deleted; bob's next device must not inherit its id (and with it
    alice's message history or a stale pairing)."""
    newest, _ = await make_device_with_token(http, alice, "host")
    async with socket(server, newest) as host_ws:
        reply = await http.post(
            "/sms",
            json={"to_device_id": newest.id, "sim": 1, "to": "+15550100", "body": "private"},
            headers=alice.headers,
        )
        assert reply.status_code == 200, reply.text
        assert (await receive(host_ws))["body"] == "private"
    assert (await delete_device(http, alice, newest.id)).body == DELETED

    bobs, _ = await make_device_with_token(http, bob, "host")

    assert bobs.id > newest.id
    assert await history(http, bob, bobs) == []


# --- DELETE /devices/{id}: anyone else, or no such device -----------------------------------
async def test_delete_device_of_other_user_returns_404_and_keeps_it(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> None:
    missing = await delete_device(http, bob, MISSING_ID)
    assert_error(missing, 404)
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        for device in (pair.host, pair.client):
            assert await delete_device(http, bob, device.id) == missing

        assert await device_ids(http, alice) == [pair.host.id, pair.client.id]
        await assert_relays(host_ws, client_ws, "still")
        await assert_next_is_pong(host_ws)
    assert [listed["id"] for listed in await pairings(http, alice)] == [pair.pairing_id]


@pytest.mark.parametrize(
    "device_id",
    ["0", "-1", str(2**31 - 1), str(2**31), str(2**63), str(10**40)],
    ids=["zero", "negative", "max-int32", "past-int32", "past-int64", "40-digits"],
)
async def test_delete_device_missing_id_returns_404(
    http: httpx.AsyncClient, alice: Account, pair: Pair, device_id: str
) -> None:
    reply = await delete_device(http, alice, device_id)

    assert_error(reply, 404)
    assert await device_ids(http, alice) == [pair.host.id, pair.client.id]


# --- GET /pairings ------------------------------------------------------------------------------
async def test_list_pairings_returns_only_callers_pairings_with_exact_shape(
    http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> None:
    bobs = await make_pair(http, bob)

    alices_list = await pairings(http, alice)
    bobs_list = await pairings(http, bob)

    assert len(alices_list) == 1
    listed = alices_list[0]
    assert set(listed) == {"id", "host_device_id", "client_device_id", "created_at"}
    assert (listed["id"], listed["host_device_id"], listed["client_device_id"]) == (
        pair.pairing_id,
        pair.host.id,
        pair.client.id,
    )
    assert datetime.fromisoformat(listed["created_at"]).utcoffset() is not None
    assert [(p["id"], p["host_device_id"], p["client_device_id"]) for p in bobs_list] == [
        (bobs.pairing_id, bobs.host.id, bobs.client.id)
    ]


async def test_list_pairings_without_token_returns_401(http: httpx.AsyncClient, pair: Pair) -> None:
    reply = await http.get("/pairings")

    assert reply.status_code == 401, reply.text
    assert str(pair.pairing_id) not in reply.text


# --- DELETE /pairings/{id} ----------------------------------------------------------------------
async def test_delete_pairing_owner_stops_routing_and_keeps_sockets_open(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before")

        reply = await delete_pairing(http, alice, pair.pairing_id)
        assert reply.status == 200, reply
        assert reply.body == DELETED

        await send(client_ws, get_sims_command("after"))
        assert await receive(client_ws) == NO_PAIRED_HOST
        await send(host_ws, sim_info_event("before"))
        assert await receive(host_ws) == NO_PAIRED_CLIENT
        await assert_next_is_pong(host_ws)
        await assert_next_is_pong(client_ws)
        assert await pairings(http, alice) == []
        assert_error(await delete_pairing(http, alice, pair.pairing_id), 404)


async def test_delete_pairing_then_pair_again_resumes_routing(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before")
        assert (await delete_pairing(http, alice, pair.pairing_id)).body == DELETED
        await send(client_ws, get_sims_command("between"))
        assert await receive(client_ws) == NO_PAIRED_HOST  # the cache now says "no host"

        again = await pair_devices(http, alice, pair.host, pair.client)

        assert again.pairing_id != pair.pairing_id
        await assert_relays(host_ws, client_ws, "again")
    assert [listed["id"] for listed in await pairings(http, alice)] == [again.pairing_id]


async def test_delete_pairing_of_other_user_returns_404_and_keeps_it(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> None:
    missing = await delete_pairing(http, bob, MISSING_ID)
    assert_error(missing, 404)
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before")

        assert await delete_pairing(http, bob, pair.pairing_id) == missing

        await assert_relays(host_ws, client_ws, "after")
    assert [listed["id"] for listed in await pairings(http, alice)] == [pair.pairing_id]


@pytest.mark.parametrize(
    "pairing_id",
    ["0", "-1", str(MISSING_ID), str(2**31), str(2**63), str(10**40)],
    ids=["zero", "negative", "unused", "past-int32", "past-int64", "40-digits"],
)
async def test_delete_pairing_missing_id_returns_404(
    http: httpx.AsyncClient, alice: Account, pair: Pair, pairing_id: str
) -> None:
    reply = await delete_pairing(http, alice, pairing_id)

    assert_error(reply, 404)
    assert [listed["id"] for listed in await pairings(http, alice)] == [pair.pairing_id]


# --- BOLA on the removal endpoints --------------------------------------------------------------
async def test_manage_other_users_device_or_pairing_returns_404_like_missing(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    host, host_token = await make_device_with_token(http, alice, "host")
    client, client_token = await make_device_with_token(http, alice, "client")
    alices = await pair_devices(http, alice, host, client)
    bobs = await make_pair(http, bob)
    missing_device = MISSING_ID
    missing_pairing = MISSING_ID

    for device in (host, client):
        rotate_missing = await rotate_token(http, bob, missing_device)
        assert_error(rotate_missing, 404)
        assert await rotate_token(http, bob, device.id) == rotate_missing
        delete_missing = await delete_device(http, bob, missing_device)
        assert_error(delete_missing, 404)
        assert await delete_device(http, bob, device.id) == delete_missing
    pairing_missing = await delete_pairing(http, bob, missing_pairing)
    assert_error(pairing_missing, 404)
    assert await delete_pairing(http, bob, alices.pairing_id) == pairing_missing

    # Nothing of alice's changed: devices, pairing and both device tokens are as they were.
    assert await device_ids(http, alice) == [host.id, client.id]
    assert [listed["id"] for listed in await pairings(http, alice)] == [alices.pairing_id]
    async with (
        socket(server, host, token=host_token) as host_ws,
        socket(server, client, token=client_token) as client_ws,
    ):
        await assert_relays(host_ws, client_ws, "untouched")
    # Bob's own calls still work on his own ids: the 404s above were not a broken endpoint.
    assert (await rotate_token(http, bob, bobs.host.id)).status == 200
    assert (await delete_pairing(http, bob, bobs.pairing_id)).body == DELETED
    assert (await delete_device(http, bob, bobs.client.id)).body == DELETED


async def test_rotate_device_token_of_other_user_leaves_no_trace_in_errors(
    http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> None:
    """The 404 for alice's device names neither its type nor its owner."""
    reply = await rotate_token(http, bob, pair.host.id)

    assert_error(reply, 404)
    text = json.dumps(reply.body)
    assert "host" not in text and alice.username not in text
