"""Socket admission (`simbridge.services.admission`) on a live server: a handshake on warm
caches sends no query, and a revocation that lands between a handshake's admission and its
socket's registration still wins.

Queries are counted as Tortoise sends them (`statements_sent`): every query the server makes
goes through Tortoise, except the message log's, which no handshake writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from simbridge.config import Settings
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_REVOKED
from simbridge.services.admission import Admission, admit_socket
from tests.helpers import (
    RECV_TIMEOUT,
    Account,
    Device,
    LiveServer,
    bearer,
    dial,
    eventually,
    handshake,
    make_account,
    make_device,
    make_device_with_token,
    serving,
    statements_sent,
)

LONG = 3600.0  # no last_seen flush comes during a test


async def admitted(server: LiveServer, device: Device, token: str) -> Admission:
    """What a handshake for `device` with `token` is admitted with, now."""
    runtime = server.runtime
    return await admit_socket(
        token,
        device.id,
        DeviceType(device.type),
        runtime.identities,
        runtime.device_records,
        runtime.broker,
    )


async def still_valid(server: LiveServer, admission: Admission, device: Device) -> bool:
    runtime = server.runtime
    return await admission.still_valid(device.id, runtime.device_records, runtime.identities)


async def no_sockets_left(server: LiveServer) -> bool:
    """Every socket handler has ended (the last one's disconnect included)."""
    return await eventually(lambda: len(server.runtime.hub) == 0)


async def test_a_handshake_on_warm_caches_sends_no_query(settings: Settings) -> None:
    async with serving(settings, last_seen_flush_seconds=LONG) as served:
        server = served.live
        alice = await make_account(served.http, "alice")
        host, device_token = await make_device_with_token(served.http, alice, "host")
        for token in (alice.token, device_token):
            assert (await handshake(server, host, token)).status == 101  # the caches fill
            assert await no_sockets_left(server)

            with statements_sent() as sent:
                assert (await handshake(server, host, token)).status == 101
                assert await no_sockets_left(server)  # disconnected: last_seen noted

            assert sent == []
        reply = await served.http.get("/devices", headers=alice.headers)
        assert reply.json()[0]["last_seen"] is not None  # noted, shown, not yet written


async def test_a_handshake_on_a_cold_device_cache_reads_the_device_once(
    server: LiveServer, alice: Account, http: httpx.AsyncClient
) -> None:
    host = await make_device(http, alice, "host")  # alice's user is remembered meanwhile

    with statements_sent() as sent:
        assert (await handshake(server, host, alice.token)).status == 101
        assert await no_sockets_left(server)

    assert len(sent) == 1 and sent[0].startswith("SELECT") and '"devices"' in sent[0], sent


async def logout_all(http: httpx.AsyncClient, owner: Account, device: Device) -> None:
    reply = await http.post("/auth/logout-all", headers=owner.headers)
    assert reply.status_code == 200, reply.text


async def rotate(http: httpx.AsyncClient, owner: Account, device: Device) -> None:
    reply = await http.post(f"/devices/{device.id}/token", headers=owner.headers)
    assert reply.status_code == 200, reply.text


async def delete(http: httpx.AsyncClient, owner: Account, device: Device) -> None:
    reply = await http.delete(f"/devices/{device.id}", headers=owner.headers)
    assert reply.status_code == 200, reply.text


Revocation = Callable[[httpx.AsyncClient, Account, Device], Awaitable[None]]


@pytest.mark.parametrize(
    ("credential", "revoke", "voided"),
    [
        ("user", logout_all, True),
        ("user", delete, True),
        ("user", rotate, False),  # another credential's: sockets opened with the user's stay
        ("device", rotate, True),
        ("device", delete, True),
        ("device", logout_all, False),  # likewise
    ],
)
async def test_a_revocation_after_admission_voids_exactly_what_it_revokes(
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: Account,
    credential: str,
    revoke: Revocation,
    voided: bool,
) -> None:
    host, device_token = await make_device_with_token(http, alice, "host")
    token = alice.token if credential == "user" else device_token
    assert (await handshake(server, host, token)).status == 101  # the caches fill
    admission = await admitted(server, host, token)
    with statements_sent() as sent:
        assert await still_valid(server, admission, host)
    assert sent == []  # answered from the caches

    await revoke(http, alice, host)

    assert await still_valid(server, admission, host) is not voided


async def test_sockets_opening_while_their_user_logs_out_everywhere_all_end_revoked(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    """Whatever point each handshake has reached when the revocation lands, its socket ends:
    refused (401), closed before its greeting (admission void at registration) or closed
    once registered (4001). None stays open."""
    devices = [await make_device(http, alice, "host", f"h{i}") for i in range(20)]
    first_open = asyncio.Event()

    async def attempt(device: Device) -> int:
        try:
            async with dial(server, device, alice.token) as ws:
                first_open.set()
                await asyncio.wait_for(ws.wait_closed(), RECV_TIMEOUT)
                assert ws.close_code is not None
                return ws.close_code
        except InvalidStatus as refused:
            return refused.response.status_code

    attempts = [asyncio.create_task(attempt(device)) for device in devices]
    await asyncio.wait_for(first_open.wait(), RECV_TIMEOUT)
    reply = await http.post("/auth/logout-all", headers=bearer(alice.token))
    assert reply.status_code == 200, reply.text
    outcomes = await asyncio.gather(*attempts)

    assert set(outcomes) <= {401, CLOSE_REVOKED}, outcomes
    assert CLOSE_REVOKED in outcomes
    assert await no_sockets_left(server)
