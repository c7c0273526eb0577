"""The REST command fallbacks of contract §3 (`POST /sms`, `POST /call`, `GET /sims`): what the
host receives, who may send, field validation, and where the host's answer goes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Account,
    LiveServer,
    Pair,
    assert_error,
    assert_marker_arrives_next,
    assert_next_is_pong,
    assert_rest_marker_arrives_next,
    assert_validation_error,
    eventually,
    is_offline,
    make_device,
    pair_devices,
    receive,
    send,
    socket,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
OFFLINE = "Host device is offline"


def sms(host_id: int, **changes: Any) -> dict[str, Any]:
    return {"to_device_id": host_id, "sim": 1, "to": "+15550100", "body": "hello", **changes}


def call(host_id: int, **changes: Any) -> dict[str, Any]:
    return {"to_device_id": host_id, "sim": 2, "to": "*100#", **changes}


def sent_req_id(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "sent"
    assert set(body) == {"status", "req_id"}
    assert HEX32.match(body["req_id"]), body
    return str(body["req_id"])


COMMANDS = ["sms", "call", "sims"]


async def command_by_rest(
    http: httpx.AsyncClient, caller: Account, command: str, host_id: int
) -> httpx.Response:
    """`caller`'s REST fallback for `command` (one of COMMANDS) aimed at `host_id`."""
    if command == "sims":
        return await http.get(f"/sims?host_device_id={host_id}", headers=caller.headers)
    body = sms(host_id) if command == "sms" else call(host_id)
    return await http.post(f"/{command}", json=body, headers=caller.headers)


# --- delivery to an online host ---------------------------------------------------------------
async def test_send_sms_reaches_online_host(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        reply = await http.post(
            "/sms", json=sms(pair.host.id, sim=3, body="héllo ✓"), headers=pair.host.owner.headers
        )
        req_id = sent_req_id(reply)
        assert await receive(host) == {
            "type": "command",
            "cmd": "SEND_SMS",
            "sim": 3,
            "to": "+15550100",
            "body": "héllo ✓",
            "req_id": req_id,
        }
        await assert_rest_marker_arrives_next(http, pair.host, host)  # and only once


async def test_make_call_reaches_online_host(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        reply = await http.post("/call", json=call(pair.host.id), headers=pair.host.owner.headers)
        req_id = sent_req_id(reply)
        assert await receive(host) == {
            "type": "command",
            "cmd": "MAKE_CALL",
            "sim": 2,
            "to": "*100#",
            "req_id": req_id,
        }


async def test_get_sims_reaches_online_host(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        reply = await http.get(
            f"/sims?host_device_id={pair.host.id}", headers=pair.host.owner.headers
        )
        req_id = sent_req_id(reply)
        assert await receive(host) == {"type": "command", "cmd": "GET_SIMS", "req_id": req_id}


async def test_send_sms_twice_gets_distinct_req_ids(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        first = sent_req_id(
            await http.post("/sms", json=sms(pair.host.id), headers=pair.host.owner.headers)
        )
        second = sent_req_id(
            await http.post("/sms", json=sms(pair.host.id), headers=pair.host.owner.headers)
        )
        assert first != second
        assert [(await receive(host))["req_id"], (await receive(host))["req_id"]] == [first, second]


async def test_send_sms_to_unpaired_host_of_owner_is_sent(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    """REST commands need ownership only (contract §2), not a pairing."""
    host = await make_device(http, alice, "host", "unpaired-host")
    async with socket(server, host) as host_ws:
        req_id = sent_req_id(await http.post("/sms", json=sms(host.id), headers=alice.headers))
        assert (await receive(host_ws))["req_id"] == req_id


@pytest.mark.parametrize(
    "changes",
    [{"sim": 1}, {"sim": 8}, {"to": "0123456789+*#" * 2 + "0123"}, {"body": "b" * 1600}],
    ids=["sim-1", "sim-8", "to-32-chars", "body-1600-chars"],
)
async def test_send_sms_accepts_boundary_values(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, changes: dict[str, Any]
) -> None:
    async with socket(server, pair.host) as host:
        body = sms(pair.host.id, **changes)
        reply = await http.post("/sms", json=body, headers=pair.host.owner.headers)
        req_id = sent_req_id(reply)
        received = await receive(host)
        assert received == {
            "type": "command",
            "cmd": "SEND_SMS",
            "sim": body["sim"],
            "to": body["to"],
            "body": body["body"],
            "req_id": req_id,
        }


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
async def test_command_to_offline_host_returns_503(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, command: str
) -> None:
    reply = await command_by_rest(http, pair.host.owner, command, pair.host.id)
    assert_error(reply, 503, OFFLINE)


async def test_send_sms_after_host_disconnects_returns_503(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    headers = pair.host.owner.headers
    async with socket(server, pair.host):
        sent_req_id(await http.post("/sms", json=sms(pair.host.id), headers=headers))
    assert await eventually(lambda: is_offline(http, pair.host))
    reply = await http.post("/sms", json=sms(pair.host.id), headers=headers)
    assert_error(reply, 503, OFFLINE)


async def test_commands_to_client_device_return_403(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with (
        socket(server, pair.client) as client,  # online, so only the type can refuse
        socket(server, pair.host) as host,
    ):
        for command in COMMANDS:
            assert_error(
                await command_by_rest(http, pair.client.owner, command, pair.client.id), 403
            )
        await assert_marker_arrives_next(host, pair.client, client)


async def test_commands_to_other_users_host_return_404(
    server: LiveServer, http: httpx.AsyncClient, bob: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:  # online, so only visibility can refuse
        for command in COMMANDS:
            assert_error(await command_by_rest(http, bob, command, pair.host.id), 404)
        await assert_rest_marker_arrives_next(http, pair.host, host)


async def test_commands_to_missing_device_return_404(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    for command in COMMANDS:
        assert_error(await command_by_rest(http, alice, command, 999_999), 404)


# --- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sim": 0}, "sim"),
        ({"sim": 9}, "sim"),
        ({"sim": "one"}, "sim"),
        ({"to": "555abc"}, "to"),
        ({"to": "1" * 33}, "to"),
        ({"to": ""}, "to"),
        ({"body": ""}, "body"),
        ({"body": "b" * 1601}, "body"),
        ({"to_device_id": "host"}, "to_device_id"),
    ],
    ids=[
        "sim-0",
        "sim-9",
        "sim-text",
        "to-letters",
        "to-33-chars",
        "to-empty",
        "body-empty",
        "body-1601-chars",
        "to-device-id-text",
    ],
)
async def test_send_sms_with_bad_field_returns_422(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, changes: dict[str, Any], field: str
) -> None:
    async with socket(server, pair.host) as host:
        reply = await http.post(
            "/sms", json=sms(pair.host.id, **changes), headers=pair.host.owner.headers
        )
        assert assert_validation_error(reply, field) == {field}
        await assert_rest_marker_arrives_next(http, pair.host, host)


@pytest.mark.parametrize(
    ("command", "missing"),
    [("sms", field) for field in ("to_device_id", "sim", "to", "body")]
    + [("call", field) for field in ("to_device_id", "sim", "to")],
)
async def test_command_without_field_returns_422(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, command: str, missing: str
) -> None:
    body = sms(pair.host.id) if command == "sms" else call(pair.host.id)
    del body[missing]
    reply = await http.post(f"/{command}", json=body, headers=pair.host.owner.headers)
    assert assert_validation_error(reply, missing) == {missing}


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"sim": 0}, "sim"), ({"sim": 9}, "sim"), ({"to": "12a"}, "to"), ({"to": "9" * 33}, "to")],
    ids=["sim-0", "sim-9", "to-letters", "to-33-chars"],
)
async def test_make_call_with_bad_field_returns_422(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, changes: dict[str, Any], field: str
) -> None:
    reply = await http.post(
        "/call", json=call(pair.host.id, **changes), headers=pair.host.owner.headers
    )
    assert assert_validation_error(reply, field) == {field}


@pytest.mark.parametrize("query", ["", "?host_device_id=", "?host_device_id=abc"])
async def test_get_sims_with_bad_host_device_id_returns_422(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, query: str
) -> None:
    reply = await http.get(f"/sims{query}", headers=alice.headers)
    assert assert_validation_error(reply, "host_device_id") == {"host_device_id"}


# --- the host's answer ------------------------------------------------------------------------
async def test_answer_to_rest_command_fans_out_to_online_clients(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    second = await make_device(http, alice, "client", "second-client")
    offline = await make_device(http, alice, "client", "offline-client")
    await pair_devices(http, alice, pair.host, second)
    await pair_devices(http, alice, pair.host, offline)
    async with (
        socket(server, pair.host) as host,
        socket(server, pair.client) as first_ws,
        socket(server, second) as second_ws,
    ):
        reply = await http.get(f"/sims?host_device_id={pair.host.id}", headers=alice.headers)
        req_id = sent_req_id(reply)
        assert (await receive(host))["req_id"] == req_id

        answer = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 1}], "req_id": req_id}
        await send(host, answer)
        assert await receive(first_ws) == answer
        assert await receive(second_ws) == answer
        await assert_next_is_pong(host)  # delivered: no error back to the host


async def test_rest_command_is_logged_without_sender(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    headers = pair.host.owner.headers
    async with socket(server, pair.host) as host:
        sent_req_id(await http.post("/sms", json=sms(pair.host.id), headers=headers))
        forwarded = await receive(host)

    reply = await http.get(f"/history?device_id={pair.host.id}", headers=headers)
    assert reply.status_code == 200, reply.text
    rows = [
        (row["from_device_id"], row["to_device_id"], row["msg_type"], row["payload"])
        for row in reply.json()
    ]
    assert rows == [(None, pair.host.id, "command", forwarded)]


async def test_refused_rest_command_is_not_sent(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    """A 503 means nothing was queued: a host that comes online later gets nothing."""
    reply = await http.post("/sms", json=sms(pair.host.id), headers=alice.headers)
    assert_error(reply, 503, OFFLINE)
    async with socket(server, pair.host) as host:
        await assert_rest_marker_arrives_next(http, pair.host, host)
