"""Where the message-log writer puts its batches: one INSERT statement, many rows, one commit,
with the changes of command states (`simbridge.services.command_changes`) queued among them.

On SQLite the batch goes through a connection of its own, in a worker thread: BEGIN, the
inserts and COMMIT in one hop. Through Tortoise's single aiosqlite connection the same batch
took three hops, each waiting for its turn in an event loop busy relaying, and under load the
writer, not the relay, set the pace. Other databases (PostgreSQL) go through Tortoise, whose
driver sends a batch in one round trip already.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Protocol

from tortoise import connections

from simbridge.db import CONNECTION
from simbridge.services.command_changes import (
    ANSWER_COLUMNS,
    CommandAnswered,
    CommandChange,
    CommandChanges,
    NewCommand,
    answer_commands,
    insert_commands,
)
from simbridge.services.command_changes import COLUMNS as COMMAND_COLUMNS

log = logging.getLogger("simbridge.message_log")

# One row, in the column order of `COLUMNS`.
LogRow = tuple[int | None, int | None, str, str, datetime, int | None]
COLUMNS = ("from_device_id", "to_device_id", "msg_type", "payload", "created_at", "seq")
Row = LogRow | CommandChanges  # what the writer queues
BUSY_TIMEOUT_SECONDS = 5.0  # as Tortoise's connection: a write of the REST API may hold the lock


_COLUMN_LIST = ", ".join(f'"{column}"' for column in COLUMNS)
_SQLITE_ROW = f"({', '.join('?' * len(COLUMNS))})"
ROWS_PER_SQLITE_STATEMENT = 1000  # 6,000 parameters, if the SQLite library allows as many
ANSWERS_PER_POSTGRES_STATEMENT = 1000  # 4,000 parameters of asyncpg's 32,767
BUSY_ATTEMPTS = 3
BUSY_RETRY_SECONDS = 1.0


def insert_statement(dialect: str) -> str:
    """A plain parameterised INSERT: building ORM objects cost a fifth of the relay's CPU."""
    marks = (
        ["?"] * len(COLUMNS)
        if dialect == "sqlite"
        else [f"${n}" for n in range(1, len(COLUMNS) + 1)]
    )
    return f'INSERT INTO "message_logs" ({_COLUMN_LIST}) VALUES ({", ".join(marks)})'


@lru_cache(maxsize=16)  # full batches share one; partial ones vary
def sqlite_insert(rows: int) -> str:
    """One INSERT of `rows` rows, for SQLite."""
    values = ", ".join([_SQLITE_ROW] * rows)
    return f'INSERT INTO "message_logs" ({_COLUMN_LIST}) VALUES {values}'


@dataclass(slots=True)
class Split:
    """A batch, sorted for the store: log rows, new commands, then answers (in queue order;
    an answer only ever needs a command queued before it)."""

    rows: list[LogRow] = field(default_factory=list)
    commands: list[NewCommand] = field(default_factory=list)
    answers: list[CommandAnswered] = field(default_factory=list)


def split(batch: Sequence[Row]) -> Split:
    parts = Split()
    for row in batch:
        kind = type(row)
        if kind is tuple:
            parts.rows.append(row)  # type: ignore[arg-type]
        elif kind is list:
            for change in row:  # type: ignore[union-attr]
                _add_change(parts, change)  # type: ignore[arg-type]
        else:
            _add_change(parts, row)  # type: ignore[arg-type]
    return parts


def _add_change(parts: Split, change: CommandChange) -> None:
    if type(change) is NewCommand:
        parts.commands.append(change)
    else:
        parts.answers.append(change)  # type: ignore[arg-type]


class LogStore(Protocol):
    async def insert(self, batches: Sequence[Sequence[Row]]) -> None:
        """Commit each batch in a transaction of its own: its log rows, then its command
        changes, in order (a change depends only on rows queued before it).

        A batch refused as a whole (a row names a device deleted since) is stored row by row,
        and a row refused even alone is logged and dropped: every row that can be kept is.
        """

    async def close(self) -> None: ...


class OrmLogStore:
    """Through the database Tortoise was initialised with."""

    async def insert(self, batches: Sequence[Sequence[Row]]) -> None:
        db = connections.get(CONNECTION)
        dialect = db.schema_generator.DIALECT
        statement = insert_statement(dialect)
        for batch in batches:
            parts = split(batch)
            try:
                if parts.rows:
                    await db.execute_many(statement, list(parts.rows))
            except Exception:
                _refused(parts.rows)
                for row in parts.rows:
                    try:
                        await db.execute_query(statement, list(row))
                    except Exception:
                        log.exception("could not store the log row of a %s", row[2])
            try:
                if parts.commands:
                    commands = [list(command.values()) for command in parts.commands]
                    await db.execute_many(insert_commands(dialect, 1), commands)
                for start in range(0, len(parts.answers), ANSWERS_PER_POSTGRES_STATEMENT):
                    answers = parts.answers[start : start + ANSWERS_PER_POSTGRES_STATEMENT]
                    await db.execute_query(*answer_commands(dialect, answers))
            except Exception:
                log.exception("could not store the states of %d commands", len(parts.commands))

    async def close(self) -> None:
        return None


class SqliteLogStore:
    """Through a connection of its own to the SQLite file, used by one batch at a time.

    A batch is one INSERT with many VALUES rather than `executemany`: three times faster, and
    the thread lets go of the GIL once per statement instead of once per row, so it neither
    waits on the busy event loop's thread for every row nor makes that thread wait.
    """

    def __init__(self, path: Path, busy_retry_seconds: float = BUSY_RETRY_SECONDS) -> None:
        self._path = path
        self._busy_retry_seconds = busy_retry_seconds
        self._connection: sqlite3.Connection | None = None
        self._rows_per_statement = 1  # set from the SQLite library's limit when connecting
        self._commands_per_statement = 1
        self._answers_per_statement = 1

    async def insert(self, batches: Sequence[Sequence[Row]]) -> None:
        await asyncio.to_thread(self._insert, batches)

    async def close(self) -> None:
        if self._connection is not None:
            await asyncio.to_thread(self._connection.close)
            self._connection = None

    def _insert(self, batches: Sequence[Sequence[Row]]) -> None:
        for batch in batches:
            self._insert_batch(split(batch))

    def _insert_batch(self, parts: Split) -> None:
        """Commit the batch; a busy database (the REST API's connection holding the lock
        past the busy timeout) is waited for, a refused row costs only itself."""
        batch = parts.rows
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            connection = self._connect()
            try:
                with connection:  # BEGIN, then COMMIT, or ROLLBACK if any row is refused
                    for start in range(0, len(batch), self._rows_per_statement):
                        rows = batch[start : start + self._rows_per_statement]
                        connection.execute(sqlite_insert(len(rows)), list(chain(*rows)))
                    self._store_commands(connection, parts)
                return
            except sqlite3.IntegrityError:
                _refused(batch)
                for row in batch:
                    try:
                        with connection:
                            connection.execute(sqlite_insert(1), row)
                    except sqlite3.Error:
                        log.exception("could not store the log row of a %s", row[2])
                try:
                    with connection:
                        self._store_commands(connection, parts)
                except sqlite3.Error:
                    log.exception("could not store the states of %d commands", len(parts.commands))
                return
            except sqlite3.OperationalError:
                if attempt == BUSY_ATTEMPTS:
                    raise
                log.warning("log batch not stored (attempt %d), retrying", attempt, exc_info=True)
                time.sleep(self._busy_retry_seconds)  # a worker thread: the event loop runs on

    def _store_commands(self, connection: sqlite3.Connection, parts: Split) -> None:
        """The batch's new commands in as few statements as the library allows (each
        statement is one wait for the GIL), then its answers."""
        per_statement = self._commands_per_statement
        for start in range(0, len(parts.commands), per_statement):
            commands = parts.commands[start : start + per_statement]
            values = list(chain.from_iterable(command.sqlite_values() for command in commands))
            connection.execute(insert_commands("sqlite", len(commands)), values)
        per_statement = self._answers_per_statement
        for start in range(0, len(parts.answers), per_statement):
            answers = parts.answers[start : start + per_statement]
            connection.execute(*answer_commands("sqlite", answers))

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Used from worker threads, never from two at once: the writer awaits each batch.
            connection = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
            )
            connection.execute("PRAGMA foreign_keys=ON")  # as Tortoise: no row for a lost device
            connection.execute("PRAGMA synchronous=NORMAL")  # docs/configuration.md: durability
            variables = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._rows_per_statement = min(ROWS_PER_SQLITE_STATEMENT, variables // len(COLUMNS))
            self._commands_per_statement = min(
                ROWS_PER_SQLITE_STATEMENT, variables // COMMAND_COLUMNS
            )
            self._answers_per_statement = min(
                ROWS_PER_SQLITE_STATEMENT, variables // ANSWER_COLUMNS
            )
            self._connection = connection
        return self._connection


def _refused(batch: Sequence[LogRow]) -> None:
    log.warning("batch of %d log rows refused; storing them one by one", len(batch))
