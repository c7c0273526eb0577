"""The real server process (`python -m simbridge serve`): graceful shutdown on SIGTERM, what a
restart remembers and forgets, and a refused multi-worker start (contract §4, §5)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    Device,
    assert_closed_with,
    eventually,
    get_sims_command,
    history,
    list_devices,
    make_account,
    make_pair,
    receive,
    socket,
)
from tests.processes import GRACEFUL_SECONDS, Servers, free_port, run_cli, server_env

CLOSE_GOING_AWAY = 1001
COMMANDS = 200
LOG_FLUSH_SECONDS = 1.0


async def test_sigterm_after_relay_closes_sockets_and_keeps_every_log_row(
    servers: Servers,
) -> None:
    # Big batches on a slow timer: at SIGTERM the rows are still queued, so only a shutdown
    # that commits the queue keeps them.
    first = await servers.start(
        SIMBRIDGE_LOG_BATCH_SIZE="1000", SIMBRIDGE_LOG_FLUSH_SECONDS=str(LOG_FLUSH_SECONDS)
    )
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
    async with socket(first, pair.host) as host_ws, socket(first, pair.client) as client_ws:
        sent = [f"req-{n}" for n in range(COMMANDS)]
        for req_id in sent:
            await client_ws.send(json.dumps(get_sims_command(req_id)))
        received = [(await receive(host_ws))["req_id"] for _ in sent]
        assert received == sent

        first.process.send_signal(signal.SIGTERM)
        await asyncio.gather(
            assert_closed_with(host_ws, CLOSE_GOING_AWAY),
            assert_closed_with(client_ws, CLOSE_GOING_AWAY),
        )
    exit_code = await asyncio.wait_for(first.process.wait(), GRACEFUL_SECONDS)

    assert exit_code == 0, first.log()
    second = await servers.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        rows = await history(http, pair.host.owner, pair.host, limit=500)
    assert len(rows) == COMMANDS
    assert {row["msg_type"] for row in rows} == {"command"}
    assert {(row["from_device_id"], row["to_device_id"]) for row in rows} == {
        (pair.client.id, pair.host.id)
    }
    assert [row["payload"]["req_id"] for row in reversed(rows)] == sent  # newest first


def seen_in_database(servers: Servers, *devices: Device) -> bool:
    """Whether every one of `devices` has its `last_seen` written in the servers' SQLite file."""
    with closing(sqlite3.connect(servers.tmp_path / "simbridge.db")) as db:
        ids = [device.id for device in devices]
        marks = ",".join("?" * len(ids))
        query = f"SELECT COUNT(*) FROM devices WHERE last_seen IS NOT NULL AND id IN ({marks})"
        (count,) = db.execute(query, ids).fetchone()
    return bool(count == len(ids))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "crash"])
async def test_restart_with_devices_online_reports_every_device_offline(
    servers: Servers, stop_signal: signal.Signals
) -> None:
    first = await servers.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
        alice, host, client = pair.host.owner, pair.host, pair.client
        async with socket(first, host) as host_ws, socket(first, client) as client_ws:
            before = await list_devices(http, alice)
            assert {(d["id"], d["is_online"]) for d in before} == {
                (host.id, True),
                (client.id, True),
            }
            if stop_signal == signal.SIGKILL:  # last_seen is written behind: a crash loses
                # what was noted in its last SIMBRIDGE_LAST_SEEN_FLUSH_SECONDS (a SIGTERM, none)
                assert await eventually(lambda: seen_in_database(servers, host, client))

            await servers.stop(first, stop_signal)
            closed = asyncio.gather(host_ws.wait_closed(), client_ws.wait_closed())
            await asyncio.wait_for(closed, GRACEFUL_SECONDS)
    second = await servers.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        after = await list_devices(http, alice)

    assert {(d["id"], d["is_online"]) for d in after} == {(host.id, False), (client.id, False)}
    assert all(d["last_seen"] is not None for d in after)


@pytest.mark.parametrize(
    ("args", "env"),
    [([], {"SIMBRIDGE_WORKERS": "2"}), (["--workers", "2"], {})],
    ids=["env", "flag"],
)
async def test_serve_with_two_workers_on_memory_broker_refuses_to_start(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = run_cli(
        tmp_path, "serve", "--port", str(free_port()), *args, **server_env(tmp_path, **env)
    )

    assert result.returncode == 2, result.stderr
    assert "SIMBRIDGE_WORKERS" in result.stderr
    assert "SIMBRIDGE_BROKER=redis" in result.stderr
    assert "Traceback" not in result.stderr
