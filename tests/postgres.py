"""The PostgreSQL server of the machine (127.0.0.1:5432, trust, database `test`) for tests of
the PostgreSQL back end: a fresh database per test. With CI=true an unreachable server fails
the test; elsewhere it skips, saying how to start one."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tortoise.backends.base.executor import EXECUTOR_CACHE

POSTGRES_URL = os.environ.get(
    "SIMBRIDGE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)
POSTGRES_HOWTO = (
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(or point SIMBRIDGE_TEST_POSTGRES_URL at another server)"
)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def fresh_postgres_database() -> AsyncIterator[str]:
    """A fresh, empty database on the test server, dropped afterwards.

    Tortoise caches each model's INSERT statement process-wide by connection alias, not by
    dialect, so SQL built for SQLite ("?" placeholders) by an earlier test would be sent to
    PostgreSQL (and the reverse afterwards): the cache is emptied on the way in and out.
    """
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc!r}); {POSTGRES_HOWTO}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"sb_test_{secrets.token_hex(6)}"
    EXECUTOR_CACHE.clear()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(POSTGRES_URL, name)
    finally:
        EXECUTOR_CACHE.clear()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
