"""The device sockets of contract §4, against a real server: handshake, routing, errors, limits,
replacement, keepalive, presence and the message log."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from simbridge.config import Settings
from tests.helpers import (
    RECV_TIMEOUT,
    Account,
    Device,
    LiveServer,
    Pair,
    assert_closed_with,
    assert_error,
    assert_marker_arrives_next,
    assert_next_is_pong,
    assert_rest_marker_arrives_next,
    device_row,
    dial,
    eventually,
    handshake,
    history,
    is_offline,
    is_online,
    make_device,
    pair_devices,
    paired_world,
    receive,
    send,
    socket,
    socket_url,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
SIM_INFO = {"type": "event", "event": "SIM_INFO", "sims": []}


# --- helpers ------------------------------------------------------------------------------------
@dataclass
class HostWithTwoClients:
    host: Device
    first: Device
    second: Device


@dataclass
class ClientWithTwoHosts:
    client: Device
    default_host: Device  # paired first: the lowest pairing id
    other_host: Device  # paired second, although its device id is lower


@pytest.fixture
async def team(http: httpx.AsyncClient, alice: Account) -> HostWithTwoClients:
    host = await make_device(http, alice, "host")
    first = await make_device(http, alice, "client", "first-client")
    second = await make_device(http, alice, "client", "second-client")
    await pair_devices(http, alice, host, first)
    await pair_devices(http, alice, host, second)
    return HostWithTwoClients(host, first, second)


@asynccontextmanager
async def team_sockets(
    server: LiveServer, team: HostWithTwoClients
) -> AsyncIterator[tuple[ClientConnection, ClientConnection, ClientConnection]]:
    """The open sockets of the team's host, first and second client."""
    async with (
        socket(server, team.host) as host,
        socket(server, team.first) as first,
        socket(server, team.second) as second,
    ):
        yield host, first, second


@pytest.fixture
async def two_hosts(http: httpx.AsyncClient, alice: Account) -> ClientWithTwoHosts:
    other_host = await make_device(http, alice, "host", "other-host")
    default_host = await make_device(http, alice, "host", "default-host")
    client = await make_device(http, alice, "client")
    await pair_devices(http, alice, default_host, client)
    await pair_devices(http, alice, other_host, client)
    return ClientWithTwoHosts(client, default_host, other_host)


async def assert_refused(
    server: LiveServer, device: Device, token: str, status: int, carrier: str = "query"
) -> None:
    """The handshake for `device` with `token` is refused with `status` and a JSON detail."""
    assert_error((await handshake(server, device, token, carrier)).reply, status)


# --- handshake --------------------------------------------------------------------------------
async def test_connect_sends_greeting_with_device_id(server: LiveServer, pair: Pair) -> None:
    async with dial(server, pair.host, pair.host.owner.token) as ws:
        assert await receive(ws) == {"type": "connected", "device_id": pair.host.id}


async def test_connect_marks_device_online(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    assert await is_offline(http, pair.client)
    async with socket(server, pair.client):
        assert await is_online(http, pair.client)
        assert (await device_row(http, pair.client))["last_seen"] is not None


async def test_connect_accepts_bearer_header(server: LiveServer, pair: Pair) -> None:
    async with dial(server, pair.client, pair.client.owner.token, "header") as ws:
        assert await receive(ws) == {"type": "connected", "device_id": pair.client.id}


async def test_connect_refuses_bad_bearer_header_with_401(server: LiveServer, pair: Pair) -> None:
    await assert_refused(server, pair.host, "not-a-jwt", 401, "header")


async def test_connect_refuses_unknown_device_with_404(server: LiveServer, pair: Pair) -> None:
    missing = Device(pair.host.id + 1000, "host", pair.host.owner)
    await assert_refused(server, missing, missing.owner.token, 404)


async def test_connect_refuses_other_users_device_with_404(
    server: LiveServer, bob: Account, pair: Pair
) -> None:
    await assert_refused(server, pair.host, bob.token, 404)
    await assert_refused(server, pair.client, bob.token, 404)


async def test_connect_refuses_device_on_other_type_path_with_403(
    server: LiveServer, pair: Pair
) -> None:
    token = pair.host.owner.token
    host_as_client = Device(pair.host.id, "client", pair.host.owner)
    client_as_host = Device(pair.client.id, "host", pair.client.owner)
    await assert_refused(server, host_as_client, token, 403)
    await assert_refused(server, client_as_host, token, 403)


async def test_ping_gets_pong(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await assert_next_is_pong(host)
        await assert_next_is_pong(client)


async def test_refused_handshake_leaves_live_socket_alone(
    server: LiveServer, http: httpx.AsyncClient, bob: Account, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await assert_refused(server, pair.host, bob.token, 404)
        await assert_refused(server, pair.host, "not-a-jwt", 401)
        assert await is_online(http, pair.host)
        command = {"type": "command", "cmd": "GET_SIMS", "req_id": "still-mine"}
        await send(client, command)
        assert await receive(host) == command


# --- command routing --------------------------------------------------------------------------
async def test_command_without_target_goes_to_first_paired_host(
    server: LiveServer, two_hosts: ClientWithTwoHosts
) -> None:
    command = {"type": "command", "cmd": "GET_SIMS", "req_id": "r-default"}
    async with (
        socket(server, two_hosts.default_host) as default_host,
        socket(server, two_hosts.other_host) as other_host,
        socket(server, two_hosts.client) as client,
    ):
        await send(client, command)
        assert await receive(default_host) == command
        await assert_next_is_pong(client)
        await assert_marker_arrives_next(client, two_hosts.other_host, other_host)


async def test_command_with_target_goes_to_that_host(
    server: LiveServer, two_hosts: ClientWithTwoHosts
) -> None:
    command = {
        "type": "command",
        "cmd": "GET_SIMS",
        "req_id": "r-targeted",
        "to_device_id": two_hosts.other_host.id,
    }
    async with (
        socket(server, two_hosts.default_host) as default_host,
        socket(server, two_hosts.other_host) as other_host,
        socket(server, two_hosts.client) as client,
    ):
        await send(client, command)
        assert await receive(other_host) == command
        await assert_marker_arrives_next(client, two_hosts.default_host, default_host)


async def test_command_to_unpaired_host_is_refused(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    """Neither the host named nor the client's own host gets it."""
    stranger = await make_device(http, alice, "host", "unpaired-host")
    async with (
        socket(server, pair.host) as host,
        socket(server, stranger) as unpaired,
        socket(server, pair.client) as client,
    ):
        await send(client, {"type": "command", "cmd": "GET_SIMS", "to_device_id": stranger.id})
        assert await receive(client) == {"error": "not paired", "target_device_id": stranger.id}
        await assert_rest_marker_arrives_next(http, stranger, unpaired)
        await assert_marker_arrives_next(client, pair.host, host)


async def test_command_to_other_users_host_is_refused(
    server: LiveServer, http: httpx.AsyncClient, bob: Account, pair: Pair
) -> None:
    bobs_host = await make_device(http, bob, "host")
    async with socket(server, bobs_host) as other, socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS", "to_device_id": bobs_host.id})
        assert await receive(client) == {"error": "not paired", "target_device_id": bobs_host.id}
        await assert_rest_marker_arrives_next(http, bobs_host, other)


async def test_command_from_unpaired_client_gets_no_paired_host(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    loner = await make_device(http, alice, "client", "loner")
    async with socket(server, loner) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"})
        assert await receive(client) == {"error": "no paired host"}


async def test_command_to_offline_host_gets_target_offline(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "r-offline"})
        assert await receive(client) == {
            "error": "target_offline",
            "target_device_id": pair.host.id,
            "req_id": "r-offline",
        }


async def test_command_without_req_id_gets_generated_one(server: LiveServer, pair: Pair) -> None:
    command = {
        "type": "command",
        "cmd": "SEND_SMS",
        "sim": 2,
        "to": "+15550100",
        "body": "héllo ✓",
        "extra": {"nested": [1, None, True]},
    }
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, command)
        forwarded = await receive(host)
        req_id = forwarded.pop("req_id")
        assert isinstance(req_id, str) and HEX32.match(req_id), req_id
        assert forwarded == command
        # the generated id correlates the host's answer back to the asking client
        await send(host, {"type": "event", "event": "SMS_SENT", "req_id": req_id})
        assert await receive(client) == {"type": "event", "event": "SMS_SENT", "req_id": req_id}


async def test_command_with_req_id_is_forwarded_unchanged(server: LiveServer, pair: Pair) -> None:
    command = {"type": "command", "cmd": "USSD", "code": "*100#", "req_id": 42, "meta": {"a": []}}
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, command)
        assert await receive(host) == command


async def test_command_from_host_gets_no_paired_host(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(host, {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"})
        assert await receive(host) == {"error": "no paired host"}
        await assert_marker_arrives_next(host, pair.client, client)


# --- event routing ----------------------------------------------------------------------------
async def test_event_answering_req_id_goes_back_to_asking_client(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    async with team_sockets(server, team) as (host, first, second):
        await send(second, {"type": "command", "cmd": "GET_SIMS", "req_id": "ask-2"})
        assert (await receive(host))["req_id"] == "ask-2"
        answer = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 1}], "req_id": "ask-2"}
        await send(host, answer)
        assert await receive(second) == answer
        await assert_marker_arrives_next(host, team.first, first)


async def test_answer_to_req_id_asked_by_two_clients_reaches_both(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    async with team_sockets(server, team) as (host, first, second):
        for client in (first, second):
            await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "1"})
            await receive(host)
        await send(host, {**SIM_INFO, "req_id": "1"})
        assert await receive(first) == {**SIM_INFO, "req_id": "1"}
        assert await receive(second) == {**SIM_INFO, "req_id": "1"}


async def test_answer_to_overlong_req_id_is_fanned_out(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    """A req_id too long to remember is not correlated: its answer goes to every client."""
    long_id = "r" * 200
    async with team_sockets(server, team) as (host, asker, other):
        await send(asker, {"type": "command", "cmd": "GET_SIMS", "req_id": long_id})
        await receive(host)
        await send(host, {**SIM_INFO, "req_id": long_id})
        assert await receive(other) == {**SIM_INFO, "req_id": long_id}
        assert await receive(asker) == {**SIM_INFO, "req_id": long_id}


@pytest.mark.parametrize(
    "event",
    [
        {"type": "event", "event": "SMS_RECEIVED", "from": "+15550100", "body": "hi"},
        {"type": "event", "event": "CALL_STATE", "state": "ringing", "req_id": "never-asked"},
    ],
    ids=["no-req-id", "unknown-req-id"],
)
async def test_unsolicited_event_fans_out_to_online_clients(
    server: LiveServer, team: HostWithTwoClients, event: dict[str, Any]
) -> None:
    async with team_sockets(server, team) as (host, first, second):
        await send(host, event)
        assert await receive(first) == event
        assert await receive(second) == event
        await assert_next_is_pong(host)  # delivered: no error for the host


async def test_unsolicited_event_skips_offline_clients(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    event = {"type": "event", "event": "SMS_RECEIVED", "body": "only one listening"}
    async with socket(server, team.host) as host, socket(server, team.second) as second:
        await send(host, event)
        assert await receive(second) == event
        await assert_next_is_pong(host)  # delivered to someone: no error for the host


async def test_event_with_target_goes_to_that_client(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    event = {"type": "event", "event": "SIM_INFO", "to_device_id": team.first.id, "sims": []}
    async with team_sockets(server, team) as (host, first, second):
        await send(host, event)
        assert await receive(first) == event
        await assert_marker_arrives_next(host, team.second, second)


async def test_event_with_target_overrides_req_id_correlation(
    server: LiveServer, team: HostWithTwoClients
) -> None:
    async with team_sockets(server, team) as (host, first, second):
        await send(second, {"type": "command", "cmd": "GET_SIMS", "req_id": "ask-2"})
        await receive(host)
        event = {
            "type": "event",
            "event": "SIM_INFO",
            "req_id": "ask-2",
            "to_device_id": team.first.id,
        }
        await send(host, event)
        assert await receive(first) == event
        await assert_marker_arrives_next(host, team.second, second)


async def test_event_answering_offline_asker_gets_target_offline(
    server: LiveServer, http: httpx.AsyncClient, team: HostWithTwoClients
) -> None:
    async with socket(server, team.host) as host, socket(server, team.second) as second:
        async with socket(server, team.first) as first:
            await send(first, {"type": "command", "cmd": "GET_SIMS", "req_id": "ask-1"})
            assert (await receive(host))["req_id"] == "ask-1"
        assert await eventually(lambda: is_offline(http, team.first))

        await send(host, {"type": "event", "event": "SIM_INFO", "req_id": "ask-1"})
        assert await receive(host) == {
            "error": "target_offline",
            "target_device_id": team.first.id,
            "req_id": "ask-1",
        }
        # an answer is not broadcast to other clients
        await assert_marker_arrives_next(host, team.second, second)


async def test_event_to_unpaired_client_is_refused(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    stranger = await make_device(http, alice, "client", "unpaired-client")
    async with (
        socket(server, pair.host) as host,
        socket(server, pair.client) as client,
        socket(server, stranger) as unpaired,
    ):
        await send(host, {"type": "event", "event": "SIM_INFO", "to_device_id": stranger.id})
        assert await receive(host) == {"error": "not paired", "target_device_id": stranger.id}
        await assert_marker_arrives_next(host, pair.client, client)
        # The stranger has no host to send it a marker until it is paired with this one.
        await pair_devices(http, alice, pair.host, stranger)
        await assert_marker_arrives_next(host, stranger, unpaired)


async def test_event_to_offline_paired_client_gets_target_offline(
    server: LiveServer, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        event = {
            "type": "event",
            "event": "SIM_INFO",
            "to_device_id": pair.client.id,
            "req_id": "e1",
        }
        await send(host, event)
        assert await receive(host) == {
            "error": "target_offline",
            "target_device_id": pair.client.id,
            "req_id": "e1",
        }


async def test_event_from_host_without_clients_gets_no_paired_client(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    loner = await make_device(http, alice, "host", "lonely-host")
    async with socket(server, loner) as host:
        await send(host, {"type": "event", "event": "SMS_RECEIVED", "body": "anyone?"})
        assert await receive(host) == {"error": "no paired client"}


# --- malformed frames -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame",
    [
        "not json at all",
        '{"type": ',
        "[1, 2, 3]",
        '"command"',
        "42",
        "null",
        b"\xff\x00\xfe garbage",
    ],
    ids=["text", "truncated", "array", "string", "number", "null", "binary"],
)
async def test_invalid_frame_gets_invalid_json_and_socket_stays_open(
    server: LiveServer, pair: Pair, frame: str | bytes
) -> None:
    async with socket(server, pair.client) as client:
        await client.send(frame)
        assert await receive(client) == {"error": "invalid JSON"}
        await assert_next_is_pong(client)


@pytest.mark.parametrize(
    "frame",
    [{"type": "foo"}, {}, {"type": "pong"}, {"type": None}, {"cmd": "GET_SIMS"}],
    ids=["foo", "empty", "pong", "null-type", "no-type"],
)
async def test_unknown_type_gets_unknown_message_type_and_socket_stays_open(
    server: LiveServer, pair: Pair, frame: dict[str, Any]
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, frame)
        assert await receive(client) == {"error": "unknown message type"}
        await assert_next_is_pong(client)
        await assert_marker_arrives_next(client, pair.host, host)


async def test_errors_leave_routing_working(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        for bad in ("nope", "[]", '{"type":"foo"}'):
            await client.send(bad)
            assert "error" in await receive(client)
        command = {"type": "command", "cmd": "GET_SIMS", "req_id": "after-errors"}
        await send(client, command)
        assert await receive(host) == command


# --- size limit -------------------------------------------------------------------------------
async def test_oversized_message_closes_socket_with_1009(settings: Settings) -> None:
    async with paired_world(settings, max_message_bytes=1024) as world:
        host, sender = world.pair.host, world.pair.client
        bystander = await make_device(world.http, host.owner, "client", "bystander")
        await pair_devices(world.http, host.owner, host, bystander)
        async with (
            socket(world.live, host) as host_ws,
            socket(world.live, sender) as sender_ws,
            socket(world.live, bystander) as bystander_ws,
        ):
            fits = {"type": "command", "cmd": "X", "req_id": "fits", "pad": "a" * 900}
            await send(sender_ws, fits)
            assert await receive(host_ws) == fits

            await send(sender_ws, {"type": "command", "cmd": "X", "pad": "a" * 2000})
            await assert_closed_with(sender_ws, 1009)

            # everyone else carries on, and the oversized frame never reached the host
            await assert_next_is_pong(host_ws)
            await assert_marker_arrives_next(bystander_ws, host, host_ws)
            assert await eventually(lambda: is_offline(world.http, sender))


# --- slow consumers ---------------------------------------------------------------------------
async def test_stalled_client_does_not_stall_other_clients(settings: Settings) -> None:
    async with paired_world(settings, send_timeout_seconds=0.3) as world:
        host, stalled = world.pair.host, world.pair.client  # stalled: first in the fan-out order
        healthy = await make_device(world.http, host.owner, "client", "healthy")
        await pair_devices(world.http, host.owner, host, healthy)
        async with (
            socket(world.live, host) as host_ws,
            socket(world.live, stalled) as stalled_ws,
            socket(world.live, healthy) as healthy_ws,
        ):
            stalled_ws.transport.pause_reading()
            padding = "p" * 60_000
            for number in range(1000):  # bounded: enough to fill every buffer on the way
                event = {"type": "event", "event": "BULK", "n": number, "pad": padding}
                await send(host_ws, event)
                assert await receive(healthy_ws) == event
                if await is_offline(world.http, stalled):
                    break
            else:
                pytest.fail("the stalled client was never dropped")
            await assert_next_is_pong(host_ws)
            stalled_ws.transport.resume_reading()


# --- replacement ------------------------------------------------------------------------------
async def test_second_connection_replaces_first_with_4000(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.client) as client, socket(server, pair.host) as old_host:
        async with socket(server, pair.host) as new_host:
            await assert_closed_with(old_host, 4000, "replaced")

            # the old socket's end must not take the device offline
            assert await is_online(http, pair.host)
            command = {"type": "command", "cmd": "GET_SIMS", "req_id": "to-new"}
            await send(client, command)
            assert await receive(new_host) == command
            await assert_next_is_pong(new_host)


async def test_replaced_connection_does_not_receive_messages(
    server: LiveServer, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as old_client:
        async with socket(server, pair.client) as new_client:
            await assert_closed_with(old_client, 4000)
            event = {"type": "event", "event": "SMS_RECEIVED", "body": "for the new one"}
            await send(host, event)
            assert await receive(new_client) == event


# --- presence ---------------------------------------------------------------------------------
async def test_clean_close_marks_device_offline(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host):
        assert await is_online(http, pair.host)
    assert await eventually(lambda: is_offline(http, pair.host))
    assert (await device_row(http, pair.host))["last_seen"] is not None


async def test_clean_close_makes_commands_target_offline(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.client) as client:
        async with socket(server, pair.host):
            pass
        assert await eventually(lambda: is_offline(http, pair.host))
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "gone"})
        assert await receive(client) == {
            "error": "target_offline",
            "target_device_id": pair.host.id,
            "req_id": "gone",
        }


async def test_keepalive_drops_peer_that_stops_answering(settings: Settings) -> None:
    async with paired_world(settings, ws_ping_interval=0.2, ws_ping_timeout=0.2) as world:
        host, client = world.pair.host, world.pair.client
        url = socket_url(world.live, host, host.owner.token)
        async with socket(world.live, client) as healthy:
            async with connect(url, ping_interval=None, close_timeout=0.5) as silent:
                assert await receive(silent) == {"type": "connected", "device_id": host.id}
                assert await is_online(world.http, host)
                silent.transport.pause_reading()  # no more pongs from here on

                assert await eventually(lambda: is_offline(world.http, host))
                silent.transport.resume_reading()
                await asyncio.wait_for(silent.wait_closed(), RECV_TIMEOUT)

            # a peer that keeps answering protocol pings is left alone
            assert await is_online(world.http, client)
            await assert_next_is_pong(healthy)


# --- message log ------------------------------------------------------------------------------
async def test_relayed_messages_appear_in_history(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "SEND_SMS", "to": "123", "body": "x"})
        command = await receive(host)
        event = {"type": "event", "event": "SMS_SENT", "req_id": command["req_id"], "ok": True}
        await send(host, event)
        assert await receive(client) == event
        await assert_next_is_pong(client)  # not relayed: not logged

    rows = [
        (row["from_device_id"], row["to_device_id"], row["msg_type"], row["payload"])
        for row in await history(http, pair.host.owner, pair.host)
    ]
    assert rows == [
        (pair.host.id, pair.client.id, "event", event),  # newest first
        (pair.client.id, pair.host.id, "command", command),  # as forwarded, with its req_id
    ]


async def test_fanned_out_event_is_in_each_recipients_history(
    server: LiveServer, http: httpx.AsyncClient, team: HostWithTwoClients
) -> None:
    event = {"type": "event", "event": "SMS_RECEIVED", "body": "to all"}
    async with team_sockets(server, team) as (host, first, second):
        await send(host, event)
        assert await receive(first) == event
        assert await receive(second) == event

    for recipient in (team.first, team.second):
        rows = [
            (row["from_device_id"], row["to_device_id"], row["msg_type"], row["payload"])
            for row in await history(http, recipient.owner, recipient)
        ]
        assert rows == [(team.host.id, recipient.id, "event", event)]
