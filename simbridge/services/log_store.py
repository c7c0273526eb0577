"""Where the message-log writer puts its batches: one INSERT statement, many rows, one commit.

On SQLite the batch goes through a connection of its own, in a worker thread: BEGIN, the
inserts and COMMIT in one hop. Through Tortoise's single aiosqlite connection the same batch
took three hops, each waiting for its turn in an event loop busy relaying, and under load the
writer, not the relay, set the pace. Other databases (PostgreSQL) go through Tortoise, whose
driver sends a batch in one round trip already.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from simbridge.models import MessageLog

# One row, in the column order of `COLUMNS`.
LogRow = tuple[int | None, int | None, str, str, datetime]
COLUMNS = ("from_device_id", "to_device_id", "msg_type", "payload", "created_at")
BUSY_TIMEOUT_SECONDS = 5.0  # as Tortoise's connection: a write of the REST API may hold the lock


def insert_statement(dialect: str) -> str:
    """A plain parameterised INSERT: building ORM objects cost a fifth of the relay's CPU."""
    marks = ["?"] * len(COLUMNS) if dialect == "sqlite" else [f"${n}" for n in range(1, 6)]
    columns = ", ".join(f'"{column}"' for column in COLUMNS)
    return f'INSERT INTO "message_logs" ({columns}) VALUES ({", ".join(marks)})'


class LogStore(Protocol):
    async def insert(self, rows: Sequence[LogRow]) -> None:
        """Store every row, or none of them (raise)."""

    async def close(self) -> None: ...


class OrmLogStore:
    """Through the database Tortoise was initialised with."""

    async def insert(self, rows: Sequence[LogRow]) -> None:
        db = MessageLog._meta.db
        await db.execute_many(insert_statement(db.schema_generator.DIALECT), list(rows))

    async def close(self) -> None:
        return None


class SqliteLogStore:
    """Through a connection of its own to the SQLite file, used by one batch at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._statement = insert_statement("sqlite")

    async def insert(self, rows: Sequence[LogRow]) -> None:
        await asyncio.to_thread(self._insert, rows)

    async def close(self) -> None:
        if self._connection is not None:
            await asyncio.to_thread(self._connection.close)
            self._connection = None

    def _insert(self, rows: Sequence[LogRow]) -> None:
        connection = self._connect()
        with connection:  # BEGIN, then COMMIT, or ROLLBACK if any row is refused
            connection.executemany(self._statement, rows)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Used from worker threads, never from two at once: the writer awaits each batch.
            connection = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
            )
            connection.execute("PRAGMA foreign_keys=ON")  # as Tortoise: no row for a lost device
            connection.execute("PRAGMA synchronous=NORMAL")  # the durability README promises
            self._connection = connection
        return self._connection
