"""Database wiring: the Tortoise configuration, SQLite tuning and applying migrations.

`TORTOISE_ORM` is the one module-level configuration, because aerich's CLI imports it by name.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aerich import Command
from tortoise import Tortoise

from simbridge.config import Settings
from simbridge.db_locks import MIGRATIONS, holding

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
CONNECTION = "default"  # the one database connection's name in Tortoise
MODEL_MODULES = ["simbridge.models", "aerich.models"]
# WAL is Tortoise's default on SQLite; NORMAL syncs at checkpoints instead of every commit.
SQLITE_PRAGMAS = {"journal_mode": "WAL", "synchronous": "NORMAL", "busy_timeout": "5000"}


def database_url(settings: Settings) -> str:
    """The Tortoise URL, with SQLite pragmas added as query parameters (Tortoise applies them)."""
    url = settings.db_url
    if settings.is_sqlite and "?" not in url:
        url = f"{url}?{urlencode(SQLITE_PRAGMAS)}"
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    return url


def tortoise_config(settings: Settings) -> dict[str, Any]:
    return {
        "connections": {CONNECTION: database_url(settings)},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": CONNECTION}},
        "use_tz": True,
        "timezone": "UTC",
    }


TORTOISE_ORM = tortoise_config(
    Settings(
        db_path=os.environ.get("DB_PATH", Settings().db_path),
        database_url=os.environ.get("DATABASE_URL", ""),
    )
)


async def start_orm(settings: Settings) -> None:
    """Open Tortoise's connections for this process.

    `_enable_global_fallback` (a private parameter, as Tortoise's own Sanic integration passes
    it; checked against tortoise-orm 1.1, pinned) makes the connections opened here, in a
    start-up listener, visible to every request handler's task: Tortoise 1.x keeps them in a
    context variable that other tasks would not see.
    """
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)


async def stop_orm() -> None:
    await Tortoise.close_connections()


async def apply_migrations(settings: Settings) -> list[str]:
    """Apply every pending migration; returns the names of those applied.

    Creates the SQLite file (and its folder) on first use, so a fresh `DB_PATH` just works.
    """
    if settings.is_sqlite:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    async with holding(settings, MIGRATIONS, wait=True):  # workers that start together wait
        # Tortoise keeps its state in a context variable: a task of its own gives aerich a
        # Tortoise context that starts fresh and ends with the migration, whatever ran before.
        return await asyncio.create_task(_upgrade(settings))


async def _upgrade(settings: Settings) -> list[str]:
    command = Command(tortoise_config(settings), app="models", location=MIGRATIONS_DIR)
    async with command:
        await command.init()
        return await command.upgrade(run_in_transaction=True)
