"""`GET /history?device_id=N&limit=` (contract §2, §3, §4 message log)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import (
    Account,
    Device,
    LiveServer,
    Pair,
    assert_error,
    assert_validation_error,
    history,
    make_device,
    receive,
    send,
    socket,
)


def query(device_id: int | str, limit: int | str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"device_id": device_id}
    if limit is not None:
        params["limit"] = limit
    return params


async def send_sms(
    http: httpx.AsyncClient, owner: Account, host: Device, body: str = "hello"
) -> str:
    reply = await http.post(
        "/sms",
        json={"to_device_id": host.id, "sim": 1, "to": "+15550100", "body": body},
        headers=owner.headers,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["req_id"])


async def relay_sms(
    server: LiveServer, http: httpx.AsyncClient, host: Device, count: int
) -> list[str]:
    """`count` SMS over REST to `host`, each received by its socket; returns their req_ids."""
    async with socket(server, host) as host_ws:
        req_ids = []
        for number in range(count):
            req_ids.append(await send_sms(http, host.owner, host, f"sms {number}"))
            assert (await receive(host_ws))["req_id"] == req_ids[-1]
    return req_ids


# --- what is logged ---------------------------------------------------------------------------
async def test_history_lists_relayed_messages_newest_first(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    command = {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"}
    event = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 1}], "req_id": "r1"}
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, command)
        assert await receive(host) == command
        await send(host, event)
        assert await receive(client) == event
        req_id = await send_sms(http, pair.host.owner, pair.host, "hi there")
        assert (await receive(host))["req_id"] == req_id

    rows = await history(http, pair.host.owner, pair.host)

    assert [(row["from_device_id"], row["to_device_id"], row["msg_type"]) for row in rows] == [
        (None, pair.host.id, "command"),
        (pair.host.id, pair.client.id, "event"),
        (pair.client.id, pair.host.id, "command"),
    ]
    assert [row["payload"] for row in rows] == [
        {
            "type": "command",
            "cmd": "SEND_SMS",
            "sim": 1,
            "to": "+15550100",
            "body": "hi there",
            "req_id": req_id,
        },
        event,
        command,
    ]
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3


async def test_history_includes_sent_and_received_of_the_device_only(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "a"})
        await receive(host)
        await send(host, {"type": "event", "event": "SIM_INFO", "sims": [], "req_id": "a"})
        await receive(client)
        await send_sms(http, pair.client.owner, pair.host)  # to the host only
        await receive(host)

    rows = await history(http, pair.client.owner, pair.client)

    assert [(row["from_device_id"], row["to_device_id"]) for row in rows] == [
        (pair.host.id, pair.client.id),  # received
        (pair.client.id, pair.host.id),  # sent
    ]


async def test_history_payload_has_req_id_the_server_added(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS"})
        forwarded = await receive(host)

    rows = await history(http, pair.client.owner, pair.client)

    assert isinstance(forwarded["req_id"], str) and forwarded["req_id"]
    assert [row["payload"] for row in rows] == [forwarded]


async def test_history_logs_rest_sms_without_sender(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        req_id = await send_sms(http, pair.host.owner, pair.host, "from the web")
        delivered = await receive(host)

    rows = await history(http, pair.host.owner, pair.host)

    assert len(rows) == 1
    assert rows[0]["from_device_id"] is None
    assert rows[0]["to_device_id"] == pair.host.id
    assert rows[0]["msg_type"] == "command"
    assert rows[0]["payload"] == delivered
    assert rows[0]["payload"]["req_id"] == req_id


async def test_history_skips_unrelayed_frames(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.client) as client:  # host offline: nothing is relayed
        await send(client, {"type": "ping"})
        assert await receive(client) == {"type": "pong"}
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "x"})
        assert (await receive(client))["error"] == "target_offline"

    assert await history(http, pair.client.owner, pair.client) == []


async def test_history_of_device_without_messages_is_empty(
    http: httpx.AsyncClient, alice: Account
) -> None:
    device = await make_device(http, alice, "host")

    assert await history(http, alice, device) == []


# --- limit ------------------------------------------------------------------------------------
async def test_history_limit_returns_newest_rows(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    req_ids = await relay_sms(server, http, pair.host, 5)

    rows = await history(http, pair.host.owner, pair.host, limit=2)

    assert [row["payload"]["req_id"] for row in rows] == [req_ids[4], req_ids[3]]


async def test_history_limit_counts_sent_and_received_together(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        for number in range(3):
            await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": f"c{number}"})
            await receive(host)
            await send(host, {"type": "event", "event": "SIM_INFO", "req_id": f"c{number}"})
            await receive(client)

    rows = await history(http, pair.client.owner, pair.client, limit=3)

    assert [(row["msg_type"], row["payload"]["req_id"]) for row in rows] == [
        ("event", "c2"),
        ("command", "c2"),
        ("event", "c1"),
    ]


async def test_history_limit_defaults_to_50(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    req_ids = await relay_sms(server, http, pair.host, 55)

    rows = await history(http, pair.host.owner, pair.host)

    assert len(rows) == 50
    assert [row["payload"]["req_id"] for row in rows] == req_ids[:4:-1]


@pytest.mark.parametrize("limit", [1, 500])
async def test_history_limit_at_bounds_is_accepted(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, limit: int
) -> None:
    await relay_sms(server, http, pair.host, 2)

    rows = await history(http, pair.host.owner, pair.host, limit=limit)

    assert len(rows) == min(limit, 2)


@pytest.mark.parametrize("limit", ["0", "501", "1000000", "-1", "abc", "2.5"])
async def test_history_limit_out_of_range_or_not_integer_is_422(
    http: httpx.AsyncClient, alice: Account, limit: str
) -> None:
    device = await make_device(http, alice, "host")

    reply = await http.get("/history", params=query(device.id, limit), headers=alice.headers)

    assert assert_validation_error(reply, "limit") == {"limit"}


async def test_history_limit_present_but_empty_is_422_like_any_non_integer(
    http: httpx.AsyncClient, alice: Account
) -> None:
    """`?limit=` is a limit that is not an integer, not a missing one (that keeps the default,
    see test_history_limit_defaults_to_50)."""
    device = await make_device(http, alice, "host")

    empty = await http.get(f"/history?device_id={device.id}&limit=", headers=alice.headers)
    letters = await http.get(f"/history?device_id={device.id}&limit=abc", headers=alice.headers)

    assert assert_validation_error(empty, "limit") == {"limit"}
    assert assert_validation_error(letters, "limit") == {"limit"}


@pytest.mark.parametrize(
    "params",
    [{}, {"device_id": "abc"}, {"device_id": ""}, {"limit": "10"}],
    ids=["missing", "letters", "empty", "only-limit"],
)
async def test_history_without_integer_device_id_is_422(
    http: httpx.AsyncClient, alice: Account, params: dict[str, str]
) -> None:
    reply = await http.get("/history", params=params, headers=alice.headers)

    assert_validation_error(reply, "device_id")


# --- who may read -----------------------------------------------------------------------------
async def test_history_of_other_users_device_is_404(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, bob: Account
) -> None:
    await relay_sms(server, http, pair.host, 1)

    reply = await http.get("/history", params=query(pair.host.id), headers=bob.headers)

    assert_error(reply, 404)
    assert "payload" not in reply.text


async def test_history_of_missing_device_is_same_404_as_foreign(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    bobs_device = await make_device(http, bob, "host")

    foreign = await http.get("/history", params=query(bobs_device.id), headers=alice.headers)
    missing = await http.get("/history", params=query(bobs_device.id + 1000), headers=alice.headers)

    assert_error(missing, 404)
    assert missing.json() == foreign.json()
