"""Authorization matrix (contract §1, §2, §4): alice owns a paired host and client, bob owns his
own paired host and client.

- Bob naming any of alice's device ids gets 404, byte for byte what a never-created id gets: no
  existence oracle, never 2xx, never 403.
- Naming one's own device of the wrong type is 403.
- Over WebSocket, naming a device one is not paired with is `not paired`, and nothing reaches it.
- Every protected endpoint refuses a missing or invalid token with 401 JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.security import create_token
from tests.helpers import (
    Account,
    Device,
    LiveServer,
    Pair,
    Reply,
    assert_error,
    assert_rest_marker_arrives_next,
    bearer,
    handshake,
    make_device,
    make_pair,
    pairing_code,
    receive,
    send,
    socket,
)


# --- the two accounts ------------------------------------------------------------------------
@dataclass
class World:
    server: LiveServer
    http: httpx.AsyncClient
    alice: Account
    bob: Account
    alices: Pair
    bobs: Pair

    @property
    def missing_id(self) -> int:
        """A device id nobody has (yet)."""
        devices = (self.alices.host, self.alices.client, self.bobs.host, self.bobs.client)
        return max(device.id for device in devices) + 1


@pytest.fixture
async def world(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, pair: Pair
) -> World:
    return World(server, http, alice, bob, pair, await make_pair(http, bob))


async def handshake_as(world: World, kind: str, device_id: int, token: str | None) -> Reply:
    """The handshake on the `kind` socket path of `device_id` with `token` (None: no token), as
    a Reply (status 101 if the socket opened)."""
    path_only = Device(device_id, kind, world.alice)  # the owner named here plays no part
    return (await handshake(world.server, path_only, token)).reply


# --- another user's ids: 404, the same as a missing id ---------------------------------------
Probe = Callable[[World, Account, int], Awaitable[Reply]]


async def create_pairing_code(world: World, caller: Account, device_id: int) -> Reply:
    return Reply.of(
        await world.http.post("/pair", params={"host_device_id": device_id}, headers=caller.headers)
    )


async def confirm_pairing(world: World, caller: Account, device_id: int) -> Reply:
    """Spends a fresh, valid code of the caller's own host: only the client id is at stake."""
    own_host = world.alices.host if caller is world.alice else world.bobs.host
    code = await pairing_code(world.http, caller, own_host)
    body = {"code": code, "client_device_id": device_id}
    return Reply.of(await world.http.post("/pair/confirm", json=body, headers=caller.headers))


async def send_sms(world: World, caller: Account, device_id: int) -> Reply:
    body = {"to_device_id": device_id, "sim": 1, "to": "+15550100", "body": "hi"}
    return Reply.of(await world.http.post("/sms", json=body, headers=caller.headers))


async def make_call(world: World, caller: Account, device_id: int) -> Reply:
    body = {"to_device_id": device_id, "sim": 1, "to": "+15550100"}
    return Reply.of(await world.http.post("/call", json=body, headers=caller.headers))


async def get_sims(world: World, caller: Account, device_id: int) -> Reply:
    return Reply.of(
        await world.http.get("/sims", params={"host_device_id": device_id}, headers=caller.headers)
    )


async def get_history(world: World, caller: Account, device_id: int) -> Reply:
    return Reply.of(
        await world.http.get("/history", params={"device_id": device_id}, headers=caller.headers)
    )


async def open_host_socket(world: World, caller: Account, device_id: int) -> Reply:
    return await handshake_as(world, "host", device_id, caller.token)


async def open_client_socket(world: World, caller: Account, device_id: int) -> Reply:
    return await handshake_as(world, "client", device_id, caller.token)


ID_PROBES: list[Probe] = [
    create_pairing_code,
    confirm_pairing,
    send_sms,
    make_call,
    get_sims,
    get_history,
    open_host_socket,
    open_client_socket,
]


@pytest.mark.parametrize("probe", ID_PROBES, ids=lambda probe: probe.__name__)
async def test_probe_other_users_device_returns_404_like_missing_device(
    world: World, probe: Probe
) -> None:
    missing = await probe(world, world.bob, world.missing_id)
    assert_error(missing, 404)
    async with socket(world.server, world.alices.host) as alice_host:
        # Both of alice's devices, whatever type the endpoint wants: a 403 for the "wrong" one
        # would tell bob that the id exists and what it is.
        for device in (world.alices.host, world.alices.client):
            reply = await probe(world, world.bob, device.id)
            assert reply == missing, f"alice's {device.type} {device.id}: {reply} != {missing}"
        # Nothing of bob's reached alice's host, and her socket was not replaced.
        await assert_rest_marker_arrives_next(world.http, world.alices.host, alice_host)


async def test_confirm_other_users_code_returns_invalid_code_like_unknown_code(
    world: World,
) -> None:
    code = await pairing_code(world.http, world.alice, world.alices.host)
    unknown = f"{(int(code) + 1) % 10**6:06d}"  # bob has no live code at all

    async def bob_spends(spent: str) -> Reply:
        body = {"code": spent, "client_device_id": world.bobs.client.id}
        return Reply.of(
            await world.http.post("/pair/confirm", json=body, headers=world.bob.headers)
        )

    refused_unknown = await bob_spends(unknown)
    refused_foreign = await bob_spends(code)
    assert_error(refused_unknown, 400, "Invalid or expired pairing code")
    assert refused_foreign == refused_unknown

    # Bob's attempt did not spend alice's code: she still can.
    second_client = await make_device(world.http, world.alice, "client", "alice-tablet")
    reply = await world.http.post(
        "/pair/confirm",
        json={"code": code, "client_device_id": second_client.id},
        headers=world.alice.headers,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["host_device_id"] == world.alices.host.id


# --- one's own device of the wrong type: 403 -------------------------------------------------
@dataclass(frozen=True)
class WrongType:
    name: str
    probe: Probe
    kind: str  # the type of alice's device named, the one the endpoint does not take


WRONG_TYPES = [
    WrongType("pair_with_client_as_host", create_pairing_code, "client"),
    WrongType("confirm_with_host_as_client", confirm_pairing, "host"),
    WrongType("sms_to_client", send_sms, "client"),
    WrongType("call_to_client", make_call, "client"),
    WrongType("sims_of_client", get_sims, "client"),
    WrongType("host_socket_for_client", open_host_socket, "client"),
    WrongType("client_socket_for_host", open_client_socket, "host"),
]


async def test_probe_own_device_of_wrong_type_returns_403(world: World) -> None:
    for case in WRONG_TYPES:
        device = world.alices.client if case.kind == "client" else world.alices.host
        reply = await case.probe(world, world.alice, device.id)
        assert reply.status == 403, f"{case.name}: {reply}"
        assert_error(reply, 403)


# --- WebSocket routing across accounts -------------------------------------------------------
async def test_send_command_to_other_users_host_returns_not_paired(world: World) -> None:
    target = world.alices.host.id
    async with (
        socket(world.server, world.alices.host) as alice_host,
        socket(world.server, world.alices.client) as alice_client,
        socket(world.server, world.bobs.host),
        socket(world.server, world.bobs.client) as bob_client,
    ):
        command = {"type": "command", "cmd": "SEND_SMS", "sim": 1, "to": "+15550100"}
        await send(bob_client, {**command, "body": "from bob", "to_device_id": target})
        assert await receive(bob_client) == {"error": "not paired", "target_device_id": target}

        await send(alice_client, {**command, "body": "from alice", "req_id": "alice-1"})
        assert await receive(alice_host) == {**command, "body": "from alice", "req_id": "alice-1"}


async def test_send_event_to_other_users_client_returns_not_paired(world: World) -> None:
    target = world.alices.client.id
    async with (
        socket(world.server, world.alices.host) as alice_host,
        socket(world.server, world.alices.client) as alice_client,
        socket(world.server, world.bobs.host) as bob_host,
        socket(world.server, world.bobs.client),
    ):
        event = {"type": "event", "event": "INCOMING_SMS", "sim": 1, "from": "+15550100"}
        await send(bob_host, {**event, "body": "from bob", "to_device_id": target})
        assert await receive(bob_host) == {"error": "not paired", "target_device_id": target}

        await send(alice_host, {**event, "body": "from alice"})
        assert await receive(alice_client) == {**event, "body": "from alice"}


# --- no valid token: 401 ---------------------------------------------------------------------
Attempt = Callable[[World, str | None], Awaitable[Reply]]


async def list_devices_as(world: World, token: str | None) -> Reply:
    return Reply.of(await world.http.get("/devices", headers=bearer(token)))


async def add_device_as(world: World, token: str | None) -> Reply:
    body = {"name": "intruder", "type": "host"}
    return Reply.of(await world.http.post("/devices", json=body, headers=bearer(token)))


async def create_code_as(world: World, token: str | None) -> Reply:
    params = {"host_device_id": world.alices.host.id}
    return Reply.of(await world.http.post("/pair", params=params, headers=bearer(token)))


async def confirm_as(world: World, token: str | None) -> Reply:
    body = {"code": "123456", "client_device_id": world.alices.client.id}
    return Reply.of(await world.http.post("/pair/confirm", json=body, headers=bearer(token)))


async def sms_as(world: World, token: str | None) -> Reply:
    body = {"to_device_id": world.alices.host.id, "sim": 1, "to": "+15550100", "body": "hi"}
    return Reply.of(await world.http.post("/sms", json=body, headers=bearer(token)))


async def call_as(world: World, token: str | None) -> Reply:
    body = {"to_device_id": world.alices.host.id, "sim": 1, "to": "+15550100"}
    return Reply.of(await world.http.post("/call", json=body, headers=bearer(token)))


async def sims_as(world: World, token: str | None) -> Reply:
    params = {"host_device_id": world.alices.host.id}
    return Reply.of(await world.http.get("/sims", params=params, headers=bearer(token)))


async def history_as(world: World, token: str | None) -> Reply:
    params = {"device_id": world.alices.host.id}
    return Reply.of(await world.http.get("/history", params=params, headers=bearer(token)))


async def host_socket_as(world: World, token: str | None) -> Reply:
    return await handshake_as(world, "host", world.alices.host.id, token)


async def client_socket_as(world: World, token: str | None) -> Reply:
    return await handshake_as(world, "client", world.alices.client.id, token)


PROTECTED: list[Attempt] = [
    list_devices_as,
    add_device_as,
    create_code_as,
    confirm_as,
    sms_as,
    call_as,
    sims_as,
    history_as,
    host_socket_as,
    client_socket_as,
]


async def test_call_protected_endpoint_without_valid_token_returns_401(
    world: World, settings: Settings, clock: ManualClock
) -> None:
    """The ids named are alice's real ones: without a token, not even their existence shows, and
    nothing reaches her host."""
    forged = create_token(world.alice.user_id, "x" * 48, clock(), settings.token_ttl_seconds)
    tokens: dict[str, str | None] = {"no": None, "a garbage": "not-a-jwt", "a forged": forged}
    async with socket(world.server, world.alices.host) as alice_host:
        for name, token in tokens.items():
            for attempt in PROTECTED:
                reply = await attempt(world, token)
                assert reply.status == 401, f"{attempt.__name__} with {name} token: {reply}"
                assert_error(reply, 401)
        # Nothing reached her host, and no refused handshake replaced her socket.
        await assert_rest_marker_arrives_next(world.http, world.alices.host, alice_host)

    listed = await world.http.get("/devices", headers=world.alice.headers)
    assert len(listed.json()) == 2  # `add_device_as` created nothing

    clock.advance(settings.token_ttl_seconds + 1)
    for attempt in PROTECTED:
        reply = await attempt(world, world.alice.token)
        assert reply.status == 401, f"{attempt.__name__} with an expired token: {reply}"
        assert_error(reply, 401)
