"""Migrations (contract §5: the database is created on first run and migrated automatically),
SQLite tuning, and the same schema on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest
from tortoise import connections

from simbridge.config import Settings
from simbridge.db import MIGRATIONS_DIR, apply_migrations
from tests.helpers import (
    LiveServer,
    assert_relays,
    history,
    list_devices,
    make_account,
    paired_world,
    serving,
    socket,
)
from tests.processes import run_cli

MIGRATION_FILES = sorted(
    (path.name for path in (Path(MIGRATIONS_DIR) / "models").glob("[0-9]*_*.py")),
    key=lambda name: int(name.split("_")[0]),
)
TABLES = {"users", "devices", "pairing_codes", "pairings", "message_logs", "aerich"}
MESSAGE_LOG_INDEXES = {("from_device_id", "id"), ("to_device_id", "id")}
SECRET = "migration-tests-secret-long-enough-for-hs256"


def sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def sqlite_index_columns(path: Path, table: str) -> set[tuple[str, ...]]:
    with closing(sqlite3.connect(path)) as db:
        indexes = db.execute(f"PRAGMA index_list('{table}')").fetchall()
        return {
            tuple(column for (_, _, column) in db.execute(f"PRAGMA index_info('{index[1]}')"))
            for index in indexes
        }


# --- SQLite -----------------------------------------------------------------------------------


async def test_apply_migrations_on_empty_file_creates_schema(tmp_path: Path) -> None:
    db_path = tmp_path / "fresh" / "relay.db"
    settings = Settings(jwt_secret=SECRET, db_path=str(db_path))

    applied = await apply_migrations(settings)

    assert applied == MIGRATION_FILES
    assert TABLES <= sqlite_tables(db_path)
    assert MESSAGE_LOG_INDEXES <= sqlite_index_columns(db_path, "message_logs")
    with closing(sqlite3.connect(db_path)) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM aerich")]
    assert versions == applied


async def test_apply_migrations_creates_folder_of_sqlite_database_url(tmp_path: Path) -> None:
    target = tmp_path / "not" / "there" / "yet.db"
    settings = Settings(jwt_secret=SECRET, database_url=f"sqlite://{target}")

    assert await apply_migrations(settings)
    assert target.is_file()


async def test_apply_migrations_twice_in_one_task_applies_nothing_second_time(
    tmp_path: Path,
) -> None:
    settings = Settings(jwt_secret=SECRET, db_path=str(tmp_path / "relay.db"))
    await apply_migrations(settings)

    assert await apply_migrations(settings) == []
    with closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        assert db.execute("SELECT count(*) FROM aerich").fetchone() == (len(MIGRATION_FILES),)


async def test_migrations_started_together_are_applied_once(tmp_path: Path) -> None:
    """Workers starting at once each run the migrations: one applies them, the others wait
    for it and find nothing left to do."""
    settings = Settings(jwt_secret=SECRET, db_path=str(tmp_path / "relay.db"))

    runs = await asyncio.gather(
        *(asyncio.create_task(apply_migrations(settings)) for _ in range(3))
    )

    assert sorted(runs, key=len) == [[], [], MIGRATION_FILES]


async def test_server_connection_uses_wal_and_synchronous_normal(server: LiveServer) -> None:
    db = connections.get("default")

    _, journal = await db.execute_query("PRAGMA journal_mode")
    _, synchronous = await db.execute_query("PRAGMA synchronous")

    assert str(journal[0][0]).lower() == "wal"
    assert synchronous[0][0] == 1  # 0 OFF, 1 NORMAL, 2 FULL


async def test_server_run_leaves_database_file_in_wal_mode(settings: Settings) -> None:
    async with serving(settings) as served:
        await make_account(served.http, "walter")

    with closing(sqlite3.connect(settings.db_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT username FROM users").fetchall() == [("walter",)]


def test_migrate_command_creates_database_then_reports_up_to_date(tmp_path: Path) -> None:
    db_path = tmp_path / "nested" / "dir" / "relay.db"

    first = run_cli(tmp_path, "migrate", JWT_SECRET=SECRET, DB_PATH=str(db_path))
    second = run_cli(tmp_path, "migrate", JWT_SECRET=SECRET, DB_PATH=str(db_path))

    assert first.returncode == 0, first.stderr
    assert "applied: 0_" in first.stdout
    assert TABLES <= sqlite_tables(db_path)
    assert second.returncode == 0, second.stderr
    assert "already up to date" in second.stdout


def test_tortoise_orm_without_db_path_points_at_default_file(tmp_path: Path) -> None:
    """`TORTOISE_ORM` is what aerich's own CLI uses (pyproject `[tool.aerich]`)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from simbridge.db import TORTOISE_ORM; print(TORTOISE_ORM['connections']['default'])",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("sqlite://simbridge.db"), result.stdout


# --- PostgreSQL -------------------------------------------------------------------------------


async def postgres_schema(url: str) -> tuple[set[str], set[tuple[str, ...]]]:
    db = await asyncpg.connect(url, timeout=5)
    try:
        tables = await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        indexes = await db.fetch(
            """
            SELECT array_agg(a.attname ORDER BY k.ordinality) AS columns
            FROM pg_index i
            JOIN pg_class t ON t.oid = i.indrelid
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE t.relname = 'message_logs'
            GROUP BY i.indexrelid
            """
        )
    finally:
        await db.close()
    return {row["table_name"] for row in tables}, {tuple(row["columns"]) for row in indexes}


@pytest.mark.postgres
async def test_apply_migrations_on_postgres_creates_schema(postgres_url: str) -> None:
    settings = Settings(jwt_secret=SECRET, database_url=postgres_url)

    # Each run in its own task, as two start-ups would be; running both in one task is
    # covered (for SQLite) by test_apply_migrations_twice_in_one_task_applies_nothing_second_time.
    applied = await asyncio.create_task(apply_migrations(settings))
    again = await asyncio.create_task(apply_migrations(settings))

    assert applied == MIGRATION_FILES
    assert again == []
    tables, indexes = await postgres_schema(postgres_url)
    assert TABLES <= tables
    assert MESSAGE_LOG_INDEXES <= indexes


@pytest.mark.postgres
async def test_migrations_started_together_on_postgres_are_applied_once(postgres_url: str) -> None:
    settings = Settings(jwt_secret=SECRET, database_url=postgres_url)

    runs = await asyncio.gather(
        *(asyncio.create_task(apply_migrations(settings)) for _ in range(3))
    )

    assert sorted(runs, key=len) == [[], [], MIGRATION_FILES]


@pytest.mark.postgres
async def test_server_on_postgres_serves_account_device_and_relay_round(
    postgres_url: str, settings: Settings
) -> None:
    async with paired_world(settings, database_url=postgres_url) as world:
        host, client = world.pair.host, world.pair.client
        async with socket(world.live, host) as host_ws, socket(world.live, client) as client_ws:
            await assert_relays(host_ws, client_ws, "pg-1")
            listed = await list_devices(world.http, host.owner)
        rows = await history(world.http, host.owner, host)

    assert {(d["id"], d["type"], d["is_online"]) for d in listed} == {
        (host.id, "host", True),
        (client.id, "client", True),
    }
    assert [(row["msg_type"], row["payload"]["req_id"]) for row in rows] == [
        ("event", "pg-1"),
        ("command", "pg-1"),
    ]
    tables, _ = await postgres_schema(postgres_url)
    assert TABLES <= tables  # the server migrated the empty database itself
