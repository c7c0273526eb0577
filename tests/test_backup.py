"""`simbridge backup` and `simbridge restore` as an operator runs them: real server processes, real
sockets relaying meanwhile, the CLI as a subprocess, the result read back through the REST API."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Pair,
    get_sims_command,
    history,
    list_devices,
    make_account,
    make_device,
    make_pair,
    receive,
    send,
    sim_info_event,
    socket,
)
from tests.processes import ServerProcess, Servers, run_cli, server_env

ROUND_TRIPS_BEFORE = 100  # pair A's: 200 rows, all within one page of history (500)
RELAY_PAUSE_SECONDS = 0.02  # pair B's pace during the backup: ~100 rows/s, well under 500
MAX_ROUND_TRIPS = 50_000
BACKUP_TIMEOUT = 60.0
POSTGRES_URL = "postgres://simbridge:unused@127.0.0.1:1/simbridge"  # never connected to


async def run_cli_async(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """`python -m simbridge ARGS` without blocking the event loop (the test's sockets relay
    meanwhile); killed after BACKUP_TIMEOUT seconds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simbridge",
        *args,
        env=server_env(cwd, **env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BACKUP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def round_trip(host_ws: Any, client_ws: Any, req_id: str) -> None:
    await send(client_ws, get_sims_command(req_id))
    assert await receive(host_ws) == get_sims_command(req_id)
    await send(host_ws, sim_info_event(req_id))
    assert await receive(client_ws) == sim_info_event(req_id)


async def keep_relaying(
    server: ServerProcess, pair: Pair, stop: asyncio.Event, done: list[str]
) -> None:
    """Round trips on `pair` until `stop` (MAX_ROUND_TRIPS at most), their req_ids in `done`."""
    async with socket(server, pair.host) as host_ws, socket(server, pair.client) as client_ws:
        while not stop.is_set() and len(done) < MAX_ROUND_TRIPS:
            req_id = f"b-{len(done)}"
            await round_trip(host_ws, client_ws, req_id)
            done.append(req_id)
            await asyncio.sleep(RELAY_PAUSE_SECONDS)


def integrity(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("PRAGMA integrity_check")]


def journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def names(devices: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """Devices without `last_seen`, which the server writes behind (SIMBRIDGE_LAST_SEEN_...)."""
    return [(device["id"], device["name"], device["type"]) for device in devices]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files a backup or restore left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


async def test_backup_while_relaying_keeps_every_row_committed_before_it(
    servers: Servers, tmp_path: Path
) -> None:
    live = await servers.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        alice = await make_account(http, "alice")
        quiet, busy = await make_pair(http, alice), await make_pair(http, alice)
        async with socket(live, quiet.host) as host_ws, socket(live, quiet.client) as client_ws:
            for n in range(ROUND_TRIPS_BEFORE):
                await round_trip(host_ws, client_ws, f"a-{n}")
        stop, done = asyncio.Event(), list[str]()
        relaying = asyncio.create_task(keep_relaying(live, busy, stop, done))
        try:
            await asyncio.sleep(0.5)  # busy's sockets are open and relaying
            assert not relaying.done()
            quiet_before = await history(http, alice, quiet.host, limit=500)  # flushes the log
            busy_before = await history(http, alice, busy.host, limit=100)
            copy = tmp_path / "copy.db"
            done_before = len(done)
            # One page per step: the copy takes many steps while the server commits between them.
            code, out, err = await run_cli_async(tmp_path, "backup", str(copy), "--step-pages", "1")
            relayed_during_backup = len(done) - done_before
            assert not relaying.done()
        finally:
            stop.set()
            await asyncio.wait_for(relaying, 10)
    assert code == 0, err
    assert relayed_during_backup > 0, "nothing was relayed while the backup ran"
    assert out.startswith(f"backup: {copy}, ") and out.strip().endswith(" s"), out
    assert len(quiet_before) == 2 * ROUND_TRIPS_BEFORE
    assert integrity(copy) == ["ok"]
    assert journal_mode(copy) == "delete"  # one self-contained file, no -wal to carry along
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []

    restored = await servers.start(DB_PATH=str(copy))
    async with httpx.AsyncClient(base_url=restored.url, timeout=10) as http:
        quiet_after = await history(http, alice, quiet.host, limit=500)
        busy_after = await history(http, alice, busy.host, limit=500)
    assert quiet_after == quiet_before
    assert busy_before, "busy relayed nothing before the backup"
    assert all(row in busy_after for row in busy_before)
    # A snapshot has no holes: busy's commands in the copy are b-0, b-1, ... in order.
    commands = [int(row["payload"]["req_id"][2:]) for row in reversed(busy_after)
                if row["msg_type"] == "command"]  # fmt: skip
    assert commands == list(range(commands[0], commands[0] + len(commands)))


async def test_backup_refuses_an_existing_path_unless_forced(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "migrate", **server_env(tmp_path)).returncode == 0
    target = tmp_path / "backup.db"
    target.write_text("an earlier backup, kept\n")

    refused = run_cli(tmp_path, "backup", str(target), **server_env(tmp_path))
    assert refused.returncode == 2, refused.stderr
    assert f"{target} exists; pass --force to replace it" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_text() == "an earlier backup, kept\n"
    assert leftovers(tmp_path) == []

    forced = run_cli(tmp_path, "backup", str(target), "--force", **server_env(tmp_path))
    assert forced.returncode == 0, forced.stderr
    assert integrity(target) == ["ok"]


async def test_backup_and_restore_with_postgres_point_to_pg_dump(tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    for command in ("backup", "restore"):
        env = server_env(tmp_path, DATABASE_URL=POSTGRES_URL)
        result = run_cli(tmp_path, command, str(target), **env)
        assert result.returncode == 2, (command, result.stderr)
        assert "pg_dump" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not target.exists()


async def test_restore_is_refused_while_the_server_runs_and_works_once_it_stopped(
    servers: Servers, tmp_path: Path
) -> None:
    database, copy = tmp_path / "simbridge.db", tmp_path / "copy.db"
    live = await servers.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        alice = await make_account(http, "alice")
        pair = await make_pair(http, alice)
        async with socket(live, pair.host) as host_ws, socket(live, pair.client) as client_ws:
            await round_trip(host_ws, client_ws, "before-backup")
        rows = await history(http, alice, pair.host)
        devices = await list_devices(http, alice)
        backed_up = await run_cli_async(tmp_path, "backup", str(copy))
        assert backed_up[0] == 0, backed_up[2]
        await make_device(http, alice, "client", "after the backup")

        code, _, err = await run_cli_async(tmp_path, "restore", str(copy))
        assert code == 2, err
        assert "server appears to be running" in err, err
        assert len(await list_devices(http, alice)) == len(devices) + 1  # still the live data
    assert await servers.stop(live) == 0

    code, out, err = await run_cli_async(tmp_path, "restore", str(copy))
    assert code == 0, err
    assert out.startswith(f"restore: {database}, "), out
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("simbridge.db.before-restore-")]
    assert len(kept) == 1, kept  # the replaced database, with what came after the backup
    assert integrity(database) == ["ok"]
    assert leftovers(tmp_path) == []

    restarted = await servers.start()
    async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as http:
        assert names(await list_devices(http, alice)) == names(devices)
        assert await history(http, alice, pair.host) == rows


async def test_restore_refuses_what_is_not_a_sound_simbridge_database(
    servers: Servers, tmp_path: Path
) -> None:
    database = tmp_path / "simbridge.db"
    assert run_cli(tmp_path, "migrate", **server_env(tmp_path)).returncode == 0
    before = digest(database)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all\n" * 400)
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    damaged = tmp_path / "damaged.db"
    assert run_cli(tmp_path, "backup", str(damaged), **server_env(tmp_path)).returncode == 0
    damage_the_message_log(damaged)

    for bad, reason in [
        (garbage, "not a database"),
        (foreign, "not a SimBridge database"),
        (damaged, "integrity check failed"),
        (tmp_path / "missing.db", "no file at"),
    ]:
        result = run_cli(tmp_path, "restore", str(bad), **server_env(tmp_path))
        assert result.returncode == 2, (bad, result.stderr)
        assert reason in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr
        assert digest(database) == before
        assert leftovers(tmp_path) == []
    assert not any(p.name.startswith("simbridge.db.before-restore-") for p in tmp_path.iterdir())


def damage_the_message_log(path: Path) -> None:
    """Overwrite the header of the message log's root page: the file still opens, but
    `PRAGMA integrity_check` finds the damage."""
    with closing(sqlite3.connect(path)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'message_logs'"
        ).fetchone()
    with path.open("r+b") as raw:
        raw.seek((root - 1) * page_size)
        raw.write(b"\x0d\x00\x00\xff\xff" + b"\xee" * 32)


NOBODY = 65534  # the service's user stands for any user but root


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
async def test_restore_as_root_gives_the_database_to_its_folders_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"  # as /var/lib/simbridge: the service's user owns it
    state.mkdir()
    env = server_env(tmp_path, DB_PATH=str(state / "simbridge.db"))
    assert run_cli(tmp_path, "migrate", **env).returncode == 0
    assert run_cli(tmp_path, "backup", str(tmp_path / "copy.db"), **env).returncode == 0
    os.chown(state, NOBODY, NOBODY)
    (state / "simbridge.db.migrate-lock").unlink()

    result = run_cli(tmp_path, "restore", str(tmp_path / "copy.db"), **env)

    assert result.returncode == 0, result.stderr
    for name in ("simbridge.db", "simbridge.db.migrate-lock"):
        owner = (state / name).stat()
        assert (owner.st_uid, owner.st_gid) == (NOBODY, NOBODY), name
