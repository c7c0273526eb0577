"""Fixtures that run the real thing: a SimBridge server on a free loopback port in the test's
event loop, a real SQLite file per test, real HTTP and WebSocket clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sanic import Sanic

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.db import apply_migrations, start_orm, stop_orm
from tests.helpers import Account, LiveServer, Pair, make_account, make_pair
from tests.postgres import fresh_postgres_database
from tests.processes import Servers, running_servers

Sanic.test_mode = True  # one app per test, all named "simbridge"

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path, clock: ManualClock) -> Settings:
    """Fast knobs: cheap bcrypt, quick log flushes; everything else as shipped."""
    return Settings(
        jwt_secret=TEST_SECRET,
        db_path=str(tmp_path / "simbridge.db"),
        bcrypt_rounds=4,
        gc_freeze=False,  # a full collection per server start doubled the suite's time
        log_flush_seconds=0.005,
        graceful_shutdown_seconds=2.0,
        clock=clock,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with LiveServer.running(settings) as live:
        yield live


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await make_account(http, "alice")


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Account:
    return await make_account(http, "bob")


@pytest.fixture
async def pair(http: httpx.AsyncClient, alice: Account) -> Pair:
    """Alice's host and client, paired."""
    return await make_pair(http, alice)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """Start real server processes with `await servers.start(**env)`; all stop afterwards."""
    async for started in running_servers(tmp_path):
        yield started


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards (see tests/postgres.py)."""
    async for url in fresh_postgres_database():
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_store_settings(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[Settings]:
    """`settings` on each database back end in turn: the SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield settings
        return
    async for url in fresh_postgres_database():
        yield replace(settings, database_url=url)


@pytest.fixture
async def orm_settings(any_store_settings: Settings) -> AsyncIterator[Settings]:
    """`any_store_settings`, its database migrated and Tortoise started on it (no server)."""
    await apply_migrations(any_store_settings)
    await start_orm(any_store_settings)
    try:
        yield any_store_settings
    finally:
        await stop_orm()
