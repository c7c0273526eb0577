"""`simbridge backup` and `simbridge restore`: a consistent copy of the SQLite database taken
while the server runs, and putting such a copy back in place of `DB_PATH` while it does not.

The copy is made with SQLite's online backup API (`sqlite3.Connection.backup`), not a file
copy: a file copy of a WAL database taken while the server writes can be torn, or lack the
commits still in `-wal`. The server runs SQLite in WAL mode, where a reader never blocks the
writer; the backup holds one read transaction on the live database for the whole copy, so the
copy is the database as it was at one instant (the moment the backup started) and the server
keeps committing to the WAL meanwhile. (Without that read transaction every step would start
from a fresh snapshot, and the backup API restarts from page 1 whenever another process has
written since the previous step: under steady relaying it would never end.) The copy is made
in steps of `step_pages` pages with a short pause between them, so that a large copy does not
monopolise the CPU or the disk the server shares; its only cost to the server is that
checkpoints cannot shrink the WAL past the backup's snapshot until the backup ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from simbridge.config import Settings
from simbridge.db_locks import MIGRATIONS, holding

STEP_PAGES = 1024  # 4 MiB per step with SQLite's default 4 KiB pages
STEP_PAUSE_SECONDS = 0.002
BUSY_TIMEOUT_SECONDS = 5.0
# The tables of the first migration (and aerich's): a newer server migrates an older backup.
REQUIRED_TABLES = frozenset(
    {"users", "devices", "pairing_codes", "pairings", "message_logs", "aerich"}
)
# Every connection to a WAL database holds a read lock on this byte of the `-shm` file for as
# long as it is open (SQLite's "dead man switch", UNIX_SHM_DMS in os_unix.c): a write lock on
# it can be taken only when no process has the database open.
WAL_INDEX_DMS_BYTE = 128
PG_DUMP_HOWTO = (
    'use PostgreSQL\'s own tools: pg_dump --format=custom --file=simbridge.dump "$DATABASE_URL" '
    '(restore with pg_restore --clean --dbname="$DATABASE_URL" simbridge.dump)'
)


class BackupError(Exception):
    """The backup or restore was refused or failed; nothing was written or replaced."""

    exit_code = 2


class CorruptDatabase(BackupError):
    """A copy failed SQLite's integrity check (the live database is damaged)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Copied:
    path: Path
    size: int
    seconds: float
    previous: Path | None = None  # restore: where the replaced database was kept


def backup(
    settings: Settings, target: Path, *, force: bool = False, step_pages: int = STEP_PAGES
) -> Copied:
    """Copy the configured SQLite database to `target` while the server may be running.

    The copy goes to a temporary file beside `target`, is checked (`PRAGMA integrity_check`
    and the expected tables), then takes `target`'s name in one rename; an existing `target`
    is refused unless `force`. The file is created with mode 0600: it holds password hashes.
    """
    started = time.monotonic()
    if not settings.is_sqlite:
        raise BackupError(
            f"DATABASE_URL is PostgreSQL; simbridge backup copies SQLite only: {PG_DUMP_HOWTO}"
        )
    source = settings.sqlite_path
    if not source.is_file():
        raise BackupError(f"no database at {source} (DB_PATH): nothing to back up")
    _check_target(source, target, force)
    with _temporary_beside(target) as temporary:
        _copy(_open(source, "rw"), temporary, step_pages)
        _link(temporary, target, replace=force)
    return Copied(target, target.stat().st_size, time.monotonic() - started)


async def restore(settings: Settings, backup_file: Path) -> Copied:
    """Put `backup_file` in place of the configured SQLite database, the server stopped.

    Refused when `backup_file` is not a sound SimBridge database, or when a process has the
    database open (see `in_use`). The migration lock is held meanwhile, so a server that
    starts during the restore waits, then opens the restored database. The replaced database
    is kept beside it, renamed `<name>.before-restore-<UTC time>` with its WAL.
    """
    started = time.monotonic()
    if not settings.is_sqlite:
        raise BackupError(
            f"DATABASE_URL is PostgreSQL; simbridge restore handles SQLite only: {PG_DUMP_HOWTO}"
        )
    database = settings.sqlite_path
    if not backup_file.is_file():
        raise BackupError(f"no file at {backup_file}")
    if database.exists() and backup_file.resolve() == database.resolve():
        raise BackupError(f"{backup_file} is the database itself (DB_PATH)")
    database.parent.mkdir(parents=True, exist_ok=True)
    async with holding(settings, MIGRATIONS, wait=False) as held:
        if not held or in_use(database):
            raise BackupError(
                f"the server appears to be running on {database} (a process has the database "
                "open); stop it first (e.g. systemctl stop simbridge), then restore"
            )
        # Created by `holding` if it was missing: the server must be able to open it too.
        _own_like_folder(database.with_name(f"{database.name}.{MIGRATIONS.name}-lock"))
        with _temporary_beside(database) as temporary:
            try:
                _copy(_open(backup_file, "ro"), temporary, STEP_PAGES)
            except CorruptDatabase as exc:  # a bad backup is refused, like any other
                raise BackupError(f"{backup_file} is not a sound database: {exc}") from exc
            _own_like_folder(temporary)
            previous = _move_aside(database)
            os.replace(temporary, database)
            _sync_folder(database.parent)
    return Copied(database, database.stat().st_size, time.monotonic() - started, previous)


def in_use(database: Path) -> bool:
    """Whether some process has the WAL database open: the server keeps its connections open
    from start to stop, each holding a read lock on the WAL index's DMS byte. A write lock on
    that byte is tried (and released at once); a POSIX lock conflicts only with other
    processes, and this process holds no connection to `database`."""
    shm = database.with_name(database.name + "-shm")
    try:
        descriptor = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False  # no WAL index: no connection in WAL mode is open
    except PermissionError as exc:
        raise BackupError(
            f"cannot open {shm} to check whether the server runs: {exc}; run "
            "as the server's user or as root"
        ) from exc
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WAL_INDEX_DMS_BYTE)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    else:
        fcntl.lockf(descriptor, fcntl.LOCK_UN, 1, WAL_INDEX_DMS_BYTE)
        return False
    finally:
        os.close(descriptor)


def check_database(connection: sqlite3.Connection) -> None:
    """Raise unless `connection`'s database passes `PRAGMA integrity_check` and has the
    tables of a SimBridge database."""
    try:
        problems = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:  # damage bad enough that the check cannot run
        problems = [str(exc)]
    if problems != ["ok"]:
        raise CorruptDatabase(f"integrity check failed: {'; '.join(problems[:5])}")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if missing := REQUIRED_TABLES - tables:
        raise BackupError(f"not a SimBridge database: no table {', '.join(sorted(missing))}")


def _check_target(source: Path, target: Path, force: bool) -> None:
    if target.is_dir():
        raise BackupError(f"{target} is a folder; give the backup file's name")
    if target.exists() and not force:
        raise BackupError(f"{target} exists; pass --force to replace it")
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{target} is the database itself (DB_PATH)")
    if not target.parent.is_dir():
        raise BackupError(f"no folder {target.parent} for the backup")


def _open(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates `path` (`mode` is `ro` or `rw`)."""
    try:
        connection = sqlite3.connect(
            f"file:{quote(str(path))}?mode={mode}",
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions only where this module begins them
        )
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot read {path} as a SQLite database: {exc}") from exc
    return connection


def _copy(source: sqlite3.Connection, target: Path, step_pages: int) -> None:
    """Copy `source` (then closed) into the empty file `target` from one read snapshot, and
    check the copy. The copy is left in rollback-journal mode: one self-contained file."""
    with closing(source), closing(sqlite3.connect(target, isolation_level=None)) as copy:
        try:
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot
            source.backup(copy, pages=step_pages, progress=_pause)
            source.execute("COMMIT")
            copy.execute("PRAGMA journal_mode=DELETE").fetchone()
            check_database(copy)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"copy failed: {exc}") from exc
    with open(target, "rb") as written:
        os.fsync(written.fileno())


def _pause(status: int, remaining: int, total: int) -> None:
    """Between two steps (Python's `sleep` argument pauses only after a busy step)."""
    time.sleep(STEP_PAUSE_SECONDS)


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """An empty file (mode 0600) in `path`'s folder, so that a rename can publish it
    atomically; removed unless renamed by then."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        for leftover in (temporary, *_companions(temporary)):
            leftover.unlink(missing_ok=True)


def _link(temporary: Path, target: Path, *, replace: bool) -> None:
    """Give `temporary` the name `target` in one step; without `replace`, a `target` that
    appeared meanwhile is refused, not overwritten (a hard link never replaces)."""
    if replace:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)
        except FileExistsError as exc:
            raise BackupError(f"{target} exists; pass --force to replace it") from exc
    _sync_folder(target.parent)


def _move_aside(database: Path) -> Path | None:
    """Rename the database, its WAL first, to `<name>.before-restore-<UTC time>`; drop its
    WAL index (rebuilt from the WAL). A WAL left under the old name would be replayed into
    the restored database, so it must go with its database."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = database.with_name(f"{database.name}.before-restore-{stamp}")
    wal, shm = _companions(database)
    if wal.exists():  # even without its database: it would be replayed all the same
        os.rename(wal, kept.with_name(kept.name + "-wal"))
    shm.unlink(missing_ok=True)
    if not database.exists():
        return None
    os.rename(database, kept)
    return kept


def _companions(database: Path) -> tuple[Path, Path]:
    """The WAL and the WAL index of `database`."""
    return (database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm"))


def _own_like_folder(path: Path) -> None:
    """Run as root (as a restore on a systemd host is), give the file the owner of its folder,
    the service's user: a root-owned database would be read-only to the server."""
    if os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
