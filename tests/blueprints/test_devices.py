"""`POST /devices` and `GET /devices` (contract §2, §3, §4 online status)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from simbridge.clock import ManualClock
from tests.helpers import (
    Account,
    Device,
    LiveServer,
    assert_error,
    assert_validation_error,
    device_row,
    eventually,
    is_offline,
    is_online,
    list_devices,
    make_device,
    socket,
)


async def has_last_seen(http: httpx.AsyncClient, device: Device) -> bool:
    return (await device_row(http, device))["last_seen"] is not None


# --- POST /devices ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["host", "client"])
async def test_create_device_returns_exact_shape(
    http: httpx.AsyncClient, alice: Account, kind: str
) -> None:
    reply = await http.post(
        "/devices", json={"name": "Pixel 8", "type": kind}, headers=alice.headers
    )

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "name", "type", "is_online", "device_token"}
    assert isinstance(body["id"], int)
    assert body["name"] == "Pixel 8"
    assert body["type"] == kind
    assert body["is_online"] is False


async def test_create_device_gives_distinct_ids(http: httpx.AsyncClient, alice: Account) -> None:
    first = await make_device(http, alice, "host")
    second = await make_device(http, alice, "host")

    assert first.id != second.id


@pytest.mark.parametrize("name", ["x", "n" * 64, "Büro-Handy 📱"], ids=["1", "64", "unicode"])
async def test_create_device_name_within_1_to_64_is_accepted(
    http: httpx.AsyncClient, alice: Account, name: str
) -> None:
    reply = await http.post("/devices", json={"name": name, "type": "host"}, headers=alice.headers)

    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == name
    assert (await list_devices(http, alice))[0]["name"] == name


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "", "type": "host"}, "name"),
        ({"name": "n" * 65, "type": "host"}, "name"),
        ({"type": "host"}, "name"),
        ({"name": 42, "type": "host"}, "name"),
        ({"name": "phone", "type": "phone"}, "type"),
        ({"name": "phone", "type": "Host"}, "type"),
        ({"name": "phone", "type": ""}, "type"),
        ({"name": "phone"}, "type"),
    ],
    ids=[
        "empty-name",
        "65-char-name",
        "missing-name",
        "int-name",
        "unknown-type",
        "capitalised-type",
        "empty-type",
        "missing-type",
    ],
)
async def test_create_device_invalid_field_is_422(
    http: httpx.AsyncClient, alice: Account, payload: dict[str, Any], field: str
) -> None:
    reply = await http.post("/devices", json=payload, headers=alice.headers)

    assert_validation_error(reply, field)
    assert await list_devices(http, alice) == []


async def test_create_device_body_not_json_is_400(http: httpx.AsyncClient, alice: Account) -> None:
    reply = await http.post(
        "/devices",
        content=b"name=phone",
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert_error(reply, 400)


# --- GET /devices -----------------------------------------------------------------------------
async def test_list_devices_empty_for_new_account(http: httpx.AsyncClient, alice: Account) -> None:
    assert await list_devices(http, alice) == []


async def test_list_devices_returns_exact_shape(http: httpx.AsyncClient, alice: Account) -> None:
    host = await make_device(http, alice, "host", "Kitchen phone")
    client = await make_device(http, alice, "client", "Laptop")

    devices = sorted(await list_devices(http, alice), key=lambda entry: entry["id"])

    assert devices == [
        {
            "id": host.id,
            "name": "Kitchen phone",
            "type": "host",
            "is_online": False,
            "last_seen": None,
        },
        {
            "id": client.id,
            "name": "Laptop",
            "type": "client",
            "is_online": False,
            "last_seen": None,
        },
    ]


async def test_list_devices_shows_only_own_devices(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    alice_host = await make_device(http, alice, "host")
    alice_client = await make_device(http, alice, "client")
    bob_host = await make_device(http, bob, "host")

    alice_ids = {entry["id"] for entry in await list_devices(http, alice)}
    bob_ids = {entry["id"] for entry in await list_devices(http, bob)}

    assert alice_ids == {alice_host.id, alice_client.id}
    assert bob_ids == {bob_host.id}


# --- online status and last_seen --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["host", "client"])
async def test_list_devices_online_exactly_while_socket_open(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, kind: str
) -> None:
    device = await make_device(http, alice, kind)
    assert await is_offline(http, device)

    async with socket(server, device):
        assert await eventually(lambda: is_online(http, device))

    assert await eventually(lambda: is_offline(http, device))


async def test_list_devices_online_only_for_connected_device(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    connected = await make_device(http, alice, "host")
    idle = await make_device(http, alice, "host")

    async with socket(server, connected):
        assert await eventually(lambda: is_online(http, connected))
        assert await is_offline(http, idle)


async def test_list_devices_last_seen_is_set_with_utc_offset_on_connect(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, clock: ManualClock
) -> None:
    device = await make_device(http, alice, "host")
    assert (await device_row(http, device))["last_seen"] is None
    clock.advance(3600)
    connected_at = clock()

    async with socket(server, device):
        assert await eventually(lambda: has_last_seen(http, device))  # set just after the greeting
        seen = (await device_row(http, device))["last_seen"]

    assert isinstance(seen, str)
    last_seen = datetime.fromisoformat(seen)
    assert last_seen.utcoffset() == timedelta(0)
    assert abs(last_seen - connected_at) < timedelta(seconds=1)


async def test_list_devices_last_seen_kept_after_disconnect(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, clock: ManualClock
) -> None:
    device = await make_device(http, alice, "client")

    async with socket(server, device):
        assert await eventually(lambda: is_online(http, device))

    assert await eventually(lambda: is_offline(http, device))
    entry = await device_row(http, device)
    assert entry["last_seen"] is not None
    last_seen = datetime.fromisoformat(entry["last_seen"])
    assert last_seen.utcoffset() == timedelta(0)
    assert abs(last_seen - clock()) < timedelta(seconds=1)
