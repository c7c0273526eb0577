"""Locks shared by every process that uses one database: one migrator at a time, one retention
pass at a time, whichever workers or machines are running.

PostgreSQL: a session advisory lock on a connection of its own (closing it releases the lock,
also when the process dies). SQLite: an exclusive `flock` on a file beside the database (the
kernel releases it when the process dies).
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO

from simbridge.config import Settings


@dataclass(frozen=True, slots=True)
class DatabaseLock:
    name: str  # SQLite: the lock file is `<database file>.<name>-lock`
    key: int  # PostgreSQL: the advisory lock id


MIGRATIONS = DatabaseLock("migrate", 0x5B_0001)
RETENTION = DatabaseLock("retention", 0x5B_0002)


@asynccontextmanager
async def holding(settings: Settings, lock: DatabaseLock, *, wait: bool) -> AsyncIterator[bool]:
    """Hold `lock` for the block and yield True; without `wait`, yield False at once (and
    hold nothing) if another process or task holds it."""
    if settings.is_sqlite:
        path = settings.sqlite_path.with_name(f"{settings.sqlite_path.name}.{lock.name}-lock")
        with path.open("a") as lock_file:
            held = await _flock(lock_file, wait)
            try:
                yield held
            finally:
                if held:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        return
    import asyncpg  # the `postgres` extra: only a PostgreSQL deployment has it

    connection = await asyncpg.connect(settings.db_url.split("?", 1)[0])
    try:
        if wait:
            await connection.execute("SELECT pg_advisory_lock($1)", lock.key)
            held = True
        else:
            held = await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock.key)
        yield held
    finally:
        await connection.close()


async def _flock(lock_file: IO[str], wait: bool) -> bool:
    if wait:  # in a thread: flock blocks, and the event loop must not
        await asyncio.to_thread(fcntl.flock, lock_file.fileno(), fcntl.LOCK_EX)
        return True
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
