"""Remembered identities (`simbridge.services.identities`): what they save must never outlive
what the token, the database or a revocation says."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import httpx
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.security import create_token
from tests.helpers import LiveServer, Pair, bearer, login, make_account, serving, socket

TOKEN_TTL = 3600


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, token_ttl_seconds=TOKEN_TTL)


def bump_token_version_elsewhere(settings: Settings, user_id: int) -> None:
    """What a second worker sharing the database does when the user logs out everywhere."""
    with sqlite3.connect(settings.db_path) as db:
        db.execute("UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,))


async def test_remembered_token_still_expires(http: httpx.AsyncClient, clock: ManualClock) -> None:
    carol = await make_account(http, "carol")
    assert (await http.get("/devices", headers=carol.headers)).status_code == 200

    clock.advance(TOKEN_TTL + 1)

    assert (await http.get("/devices", headers=carol.headers)).status_code == 401


async def test_revocation_in_another_process_is_seen_within_the_cache_time(
    http: httpx.AsyncClient, clock: ManualClock, settings: Settings
) -> None:
    carol = await make_account(http, "carol")
    assert (await http.get("/devices", headers=carol.headers)).status_code == 200
    bump_token_version_elsewhere(settings, carol.user_id)

    clock.advance(settings.user_cache_seconds + 1)

    assert (await http.get("/devices", headers=carol.headers)).status_code == 401


async def test_without_cache_time_another_process_revocation_is_seen_at_once(
    settings: Settings,
) -> None:
    async with serving(settings, user_cache_seconds=0) as served:
        http = served.http
        carol = await make_account(http, "carol")
        assert (await http.get("/devices", headers=carol.headers)).status_code == 200
        bump_token_version_elsewhere(settings, carol.user_id)

        assert (await http.get("/devices", headers=carol.headers)).status_code == 401


async def test_revocation_here_is_seen_at_once_by_every_remembered_token(
    http: httpx.AsyncClient,
) -> None:
    carol = await make_account(http, "carol")
    second = (await login(http, "carol", carol.password)).json()["token"]
    for token in (carol.token, second):
        reply = await http.get("/devices", headers=bearer(token))
        assert reply.status_code == 200

    reply = await http.post("/auth/logout-all", headers=carol.headers)
    assert reply.status_code == 200
    fresh = reply.json()["token"]

    for token in (carol.token, second):
        reply = await http.get("/devices", headers=bearer(token))
        assert reply.status_code == 401
    reply = await http.get("/devices", headers=bearer(fresh))
    assert reply.status_code == 200


async def test_online_host_is_no_shortcut_for_another_user(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    """`POST /sms` skips the ownership query only for the caller's own online host."""
    bob = await make_account(http, "bob")
    sms = {"to_device_id": pair.host.id, "sim": 1, "to": "+15550100", "body": "hi"}
    async with socket(server, pair.host):
        reply = await http.post("/sms", json=sms, headers=bob.headers)
        assert reply.status_code == 404
        as_client = {**sms, "to_device_id": pair.client.id}
        async with socket(server, pair.client):
            reply = await http.post("/sms", json=as_client, headers=pair.host.owner.headers)
        assert reply.status_code == 403
        reply = await http.post("/sms", json=sms, headers=pair.host.owner.headers)
        assert reply.status_code == 200


async def test_a_token_newer_than_the_remembered_user_works_at_once(
    http: httpx.AsyncClient, clock: ManualClock, settings: Settings
) -> None:
    """Another process ran logout-all: the fresh token it returned must work here at once,
    while this process still remembers the user with the old version."""
    carol = await make_account(http, "carol")
    assert (await http.get("/devices", headers=carol.headers)).status_code == 200
    bump_token_version_elsewhere(settings, carol.user_id)
    fresh = create_token(carol.user_id, settings.jwt_secret, clock(), TOKEN_TTL, version=1)

    assert (await http.get("/devices", headers=bearer(fresh))).status_code == 200
    assert (await http.get("/devices", headers=carol.headers)).status_code == 401
