"""Presence frames (contract §8): a `since` socket hears its paired devices come and go, and
gets their state right after its greeting; v1 sockets never see a presence frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from websockets.asyncio.client import ClientConnection

from tests.helpers import (
    Device,
    LiveServer,
    Pair,
    assert_next_is_pong,
    dial,
    make_device,
    pair_devices,
    receive,
    socket,
)


@asynccontextmanager
async def since_socket(
    server: LiveServer, device: Device, since: int = 0
) -> AsyncIterator[ClientConnection]:
    """A `since` socket of `device`; its greeting is left for the test to read."""
    async with dial(server, device, device.owner.token, since=since) as ws:
        yield ws


def presence(device: Device, online: bool) -> dict[str, object]:
    return {"type": "presence", "device_id": device.id, "online": online}


async def test_the_greeting_is_followed_by_the_presence_of_each_paired_device(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    other_host = await make_device(http, pair.client.owner, "host")
    await pair_devices(http, pair.client.owner, other_host, pair.client)
    async with socket(server, pair.host), since_socket(server, pair.client) as ws:
        assert await receive(ws) == {
            "type": "connected",
            "device_id": pair.client.id,
            "seq": 0,
        }
        frames = [await receive(ws), await receive(ws)]
        assert sorted(frames, key=lambda f: str(f["device_id"])) == sorted(
            [presence(pair.host, True), presence(other_host, False)],
            key=lambda f: str(f["device_id"]),
        )
        await assert_next_is_pong(ws)


async def test_a_since_socket_hears_its_paired_device_come_and_go(
    server: LiveServer, pair: Pair
) -> None:
    async with since_socket(server, pair.client) as client_ws:
        await receive(client_ws)  # greeting
        assert await receive(client_ws) == presence(pair.host, False)
        async with socket(server, pair.host):
            assert await receive(client_ws) == presence(pair.host, True)
        assert await receive(client_ws) == presence(pair.host, False)
        await assert_next_is_pong(client_ws)


async def test_a_host_on_a_since_socket_hears_its_clients(server: LiveServer, pair: Pair) -> None:
    async with since_socket(server, pair.host) as host_ws:
        await receive(host_ws)  # greeting
        assert await receive(host_ws) == presence(pair.client, False)
        async with socket(server, pair.client):
            assert await receive(host_ws) == presence(pair.client, True)
        assert await receive(host_ws) == presence(pair.client, False)


async def test_v1_sockets_get_no_presence_frames(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.client) as client_ws:
        async with socket(server, pair.host):
            pass
        await assert_next_is_pong(client_ws)  # nothing came before the pong


async def test_an_unpaired_device_is_not_announced(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    stranger = await make_device(http, pair.client.owner, "host")
    async with since_socket(server, pair.client) as client_ws:
        await receive(client_ws)  # greeting
        assert await receive(client_ws) == presence(pair.host, False)
        async with socket(server, stranger):
            pass
        await assert_next_is_pong(client_ws)
