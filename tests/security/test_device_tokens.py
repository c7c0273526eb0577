"""Attacks with device tokens: the `sbd_...` secret that `POST /devices` shows once.

- The database keeps only its SHA-256, so a copy of the database opens nothing.
- It opens its own device's socket (through `?token=`, `Authorization: Bearer` or the
  `bearer.<token>` subprotocol) and nothing else: no other device, not the other type's path,
  no REST endpoint.
- `POST /devices/{id}/token` replaces it: the old one stops opening the socket and the sockets
  it opened close with 4001; sockets opened with the user's own token stay.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import httpx

from simbridge.config import Settings
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_REVOKED
from simbridge.security import device_token_digest
from simbridge.services.admission import Admission
from tests.helpers import (
    CARRIERS,
    Account,
    Device,
    LiveServer,
    Reply,
    assert_closed_with,
    assert_error,
    assert_next_is_pong,
    assert_relays,
    bearer,
    dial,
    handshake,
    make_account,
    make_device_with_token,
    pair_devices,
    serving,
    socket,
)


# --- helpers ----------------------------------------------------------------------------------
async def rotate(http: httpx.AsyncClient, owner: Account, device: Device) -> str:
    reply = await http.post(f"/devices/{device.id}/token", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    assert set(reply.json()) == {"device_token"}
    return str(reply.json()["device_token"])


def stored_digest(settings: Settings, device: Device) -> str | None:
    with sqlite3.connect(settings.db_path) as db:
        row = db.execute("SELECT device_token FROM devices WHERE id = ?", (device.id,)).fetchone()
    assert row is not None
    return row[0]


def database_bytes(settings: Settings) -> bytes:
    """Everything SQLite has on disk for this database: the file, its WAL and its journal."""
    main = Path(settings.db_path)
    return b"".join(path.read_bytes() for path in main.parent.glob(main.name + "*"))


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tampered(token: str) -> str:
    last = "A" if token[-1] != "A" else "B"
    return token[:-1] + last


# --- issuing and storing ----------------------------------------------------------------------
async def test_create_device_returns_distinct_device_tokens(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host, host_token = await make_device_with_token(http, alice, "host")
    client, client_token = await make_device_with_token(http, alice, "client")

    for token in (host_token, client_token):
        assert token.startswith("sbd_")
        assert len(token) >= 40  # 32 random bytes, base64url
    assert host_token != client_token
    listed = (await http.get("/devices", headers=alice.headers)).text
    assert host_token not in listed and client_token not in listed


async def test_create_device_stores_only_sha256_of_device_token(
    http: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    host, token = await make_device_with_token(http, alice, "host")

    assert stored_digest(settings, host) == sha256_hex(token)
    assert token.encode() not in database_bytes(settings)


async def test_connect_with_stored_digest_as_token_is_401(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    """Someone holding a copy of the database must not be able to open the socket."""
    host, _ = await make_device_with_token(http, alice, "host")
    digest = stored_digest(settings, host)
    assert digest is not None

    for candidate in (digest, f"sbd_{digest}"):
        for carrier in CARRIERS:
            status = (await handshake(server, host, candidate, carrier)).status
            assert status == 401, (candidate, carrier)


# --- what a device token opens ----------------------------------------------------------------
async def test_connect_with_device_tokens_via_every_carrier_opens_own_device_and_relays(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, host_token = await make_device_with_token(http, alice, "host")
    client, client_token = await make_device_with_token(http, alice, "client")
    await pair_devices(http, alice, host, client)

    for carrier in CARRIERS:
        async with (
            socket(server, host, host_token, carrier) as host_ws,
            socket(server, client, client_token, carrier) as client_ws,
        ):
            assert host_ws.subprotocol == ("simbridge" if carrier == "subprotocol" else None)
            await assert_relays(host_ws, client_ws)


async def test_connect_with_device_token_to_another_device_is_401(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """A stolen device token opens that one device: not its siblings, not anyone else's."""
    host, host_token = await make_device_with_token(http, alice, "host")
    second_host, _ = await make_device_with_token(http, alice, "host", "second-host")
    alice_client, _ = await make_device_with_token(http, alice, "client")
    bob_host, _ = await make_device_with_token(http, bob, "host")
    missing = Device(987_654, "host", alice)

    for target in (second_host, alice_client, bob_host, missing):
        for carrier in CARRIERS:
            status = (await handshake(server, target, host_token, carrier)).status
            assert status == 401, (target, carrier)


async def test_connect_with_device_token_on_other_type_path_is_403(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, host_token = await make_device_with_token(http, alice, "host")
    client, client_token = await make_device_with_token(http, alice, "client")

    for device, token in ((host, host_token), (client, client_token)):
        other_path = Device(device.id, "client" if device.type == "host" else "host", alice)
        for carrier in CARRIERS:
            status = (await handshake(server, other_path, token, carrier)).status
            assert status == 403, (device, carrier)


async def test_connect_with_malformed_device_token_is_401(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, token = await make_device_with_token(http, alice, "host")

    for bad in (tampered(token), token[:-1], token + "A", "sbd_", token.removeprefix("sbd_")):
        for carrier in CARRIERS:
            assert (await handshake(server, host, bad, carrier)).status == 401, (bad, carrier)


async def test_connect_with_token_of_deleted_device_is_401(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, token = await make_device_with_token(http, alice, "host")
    reply = await http.delete(f"/devices/{host.id}", headers=alice.headers)
    assert reply.status_code == 200, reply.text

    assert (await handshake(server, host, token, "query")).status == 401


async def test_use_device_token_as_rest_bearer_is_401(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host, token = await make_device_with_token(http, alice, "host")
    attempts = [
        ("GET", "/devices", None),
        ("POST", "/devices", {"name": "planted", "type": "client"}),
        ("POST", f"/devices/{host.id}/token", None),
        ("DELETE", f"/devices/{host.id}", None),
        ("POST", f"/pair?host_device_id={host.id}", None),
        ("GET", f"/history?device_id={host.id}", None),
        ("POST", "/auth/logout-all", None),
        ("POST", "/auth/password", {"current_password": "x", "new_password": "attacker1"}),
    ]

    replies = {
        f"{method} {url}": Reply.of(
            await http.request(method, url, json=body, headers=bearer(token))
        )
        for method, url, body in attempts
    }

    assert [f"{case} -> {reply}" for case, reply in replies.items() if reply.status != 401] == []
    for reply in replies.values():
        assert_error(reply, 401)
    listed = (await http.get("/devices", headers=alice.headers)).json()
    assert [device["id"] for device in listed] == [host.id]


async def test_connect_reply_never_echoes_device_token(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, token = await make_device_with_token(http, alice, "host")
    other_host, _ = await make_device_with_token(http, alice, "host", "other-host")

    for carrier in CARRIERS:
        accepted = await handshake(server, host, token, carrier)
        refused = await handshake(server, other_host, token, carrier)

        assert (accepted.status, refused.status) == (101, 401), carrier
        assert token.encode() not in refused.body, carrier
        for name, value in [*accepted.headers.items(), *refused.headers.items()]:
            assert token not in value and token not in name, (carrier, name, value)


# --- rotation ---------------------------------------------------------------------------------
async def test_rotate_device_token_replaces_old_token(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    host, old = await make_device_with_token(http, alice, "host")

    new = await rotate(http, alice, host)

    assert new.startswith("sbd_") and new != old
    assert stored_digest(settings, host) == sha256_hex(new)
    assert new.encode() not in database_bytes(settings)
    for carrier in CARRIERS:
        assert (await handshake(server, host, old, carrier)).status == 401, carrier
        assert (await handshake(server, host, new, carrier)).status == 101, carrier


async def test_rotate_device_token_closes_old_token_socket_with_4001(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, host_token = await make_device_with_token(http, alice, "host")
    client, client_token = await make_device_with_token(http, alice, "client")
    await pair_devices(http, alice, host, client)

    async with (
        socket(server, host, host_token, "subprotocol") as old_host,
        socket(server, client, client_token, "header") as client_ws,
    ):
        new = await rotate(http, alice, host)

        await assert_closed_with(old_host, CLOSE_REVOKED, "revoked")
        async with socket(server, host, new, "query") as new_host:
            await assert_relays(new_host, client_ws)  # the other device's socket is untouched
        assert client_ws.close_code is None


async def test_rotate_device_token_leaves_user_token_socket_of_that_device_open(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, _ = await make_device_with_token(http, alice, "host")
    client, _ = await make_device_with_token(http, alice, "client")
    await pair_devices(http, alice, host, client)

    async with socket(server, host) as host_ws, socket(server, client) as client_ws:
        await rotate(http, alice, host)
        await rotate(http, alice, client)

        await assert_relays(host_ws, client_ws)
        assert host_ws.close_code is None and client_ws.close_code is None


async def test_rotate_other_users_device_token_is_404_and_changes_nothing(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, bob: Account, settings: Settings
) -> None:
    host, token = await make_device_with_token(http, alice, "host")
    digest_before = stored_digest(settings, host)

    async with socket(server, host, token, "query") as host_ws:
        stolen = await http.post(f"/devices/{host.id}/token", headers=bob.headers)
        missing = await http.post("/devices/987654/token", headers=bob.headers)

        assert stolen.status_code == 404, stolen.text
        assert stolen.json() == missing.json()  # no existence oracle
        await assert_next_is_pong(host_ws)
    assert stored_digest(settings, host) == digest_before
    assert (await handshake(server, host, token, "header")).status == 101


async def test_rotate_device_token_without_user_token_is_401(
    http: httpx.AsyncClient, alice: Account, settings: Settings
) -> None:
    host, _ = await make_device_with_token(http, alice, "host")
    digest_before = stored_digest(settings, host)

    assert_error(await http.post(f"/devices/{host.id}/token"), 401)
    assert stored_digest(settings, host) == digest_before


# --- a stolen device token cannot lock the owner out ------------------------------------------
async def test_connect_and_drop_with_device_token_does_not_lock_out_other_devices(
    settings: Settings,
) -> None:
    """Whoever holds one device token may open and drop that device's socket at will; the
    owner's other devices must still get in.

    Dropping a socket the instant the handshake completes must release it on the server like
    any other close (here with a cap of one socket beside the device's own).
    """
    async with serving(settings, max_sockets_per_user=1) as served:
        server, http = served.live, served.http
        carol = await make_account(http, "carol")
        host, host_token = await make_device_with_token(http, carol, "host")
        client, _ = await make_device_with_token(http, carol, "client")

        async def open_and_drop() -> None:
            async with dial(server, host, host_token):
                pass  # dropped at once, before reading the greeting

        async def list_devices() -> None:  # the owner's app, busy meanwhile
            assert (await http.get("/devices", headers=carol.headers)).status_code == 200

        for _ in range(5):
            await asyncio.gather(
                *(open_and_drop() for _ in range(4)), *(list_devices() for _ in range(4))
            )
        await list_devices()

        assert (await handshake(server, client, carol.token)).status == 101


async def test_admission_by_device_token_is_void_once_rotated(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    """Checked once the socket is registered, so a rotation racing the handshake wins."""
    host, token = await make_device_with_token(http, alice, "host")
    admitted = Admission(alice.user_id, DeviceType.HOST, None, device_token_digest(token))
    runtime = server.runtime
    assert await admitted.still_valid(host.id, runtime.device_records, runtime.identities)

    await rotate(http, alice, host)

    assert not await admitted.still_valid(host.id, runtime.device_records, runtime.identities)
