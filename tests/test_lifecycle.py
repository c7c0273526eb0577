"""The real server process (`python -m simbridge serve`): graceful shutdown on SIGTERM, what a
restart remembers and forgets, and a refused multi-worker start (contract §4, §5)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import Account, Device, make_account, make_device, pair_devices
from tests.processes import GRACEFUL_SECONDS, ServerProcess, Servers, free_port, server_env

RECV_TIMEOUT = 5.0
CLOSE_GOING_AWAY = 1001
COMMANDS = 200
LOG_FLUSH_SECONDS = 1.0


async def open_socket(server: ServerProcess, device: Device) -> ClientConnection:
    url = f"{server.ws_url}/ws/{device.type}/{device.id}?token={device.owner.token}"
    ws = await connect(url, open_timeout=RECV_TIMEOUT, close_timeout=2, ping_interval=None)
    assert await receive(ws) == {"type": "connected", "device_id": device.id}
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert isinstance(frame, dict)
    return frame


async def closed_with(ws: ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), GRACEFUL_SECONDS)
    return ws.close_code


async def paired_devices(http: httpx.AsyncClient) -> tuple[Account, Device, Device]:
    alice = await make_account(http, "alice")
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    await pair_devices(http, alice, host, client)
    return alice, host, client


async def test_sigterm_after_relay_closes_sockets_and_keeps_every_log_row(
    servers: Servers,
) -> None:
    # Big batches on a slow timer: at SIGTERM the rows are still queued, so only a shutdown
    # that commits the queue keeps them.
    first = await servers.start(
        SIMBRIDGE_LOG_BATCH_SIZE="1000", SIMBRIDGE_LOG_FLUSH_SECONDS=str(LOG_FLUSH_SECONDS)
    )
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        alice, host, client = await paired_devices(http)
    host_ws = await open_socket(first, host)
    client_ws = await open_socket(first, client)
    sent = [f"req-{n}" for n in range(COMMANDS)]
    for req_id in sent:
        await client_ws.send(json.dumps({"type": "command", "cmd": "GET_SIMS", "req_id": req_id}))
    received = [(await receive(host_ws))["req_id"] for _ in sent]
    assert received == sent

    first.process.send_signal(signal.SIGTERM)
    close_codes = await asyncio.gather(closed_with(host_ws), closed_with(client_ws))
    exit_code = await asyncio.wait_for(first.process.wait(), GRACEFUL_SECONDS)

    assert close_codes == [CLOSE_GOING_AWAY, CLOSE_GOING_AWAY]
    assert exit_code == 0, first.log()
    second = await servers.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        reply = await http.get(f"/history?device_id={host.id}&limit=500", headers=alice.headers)
    assert reply.status_code == 200, reply.text
    rows = reply.json()
    assert len(rows) == COMMANDS
    assert {row["msg_type"] for row in rows} == {"command"}
    assert {(row["from_device_id"], row["to_device_id"]) for row in rows} == {(client.id, host.id)}
    assert [row["payload"]["req_id"] for row in reversed(rows)] == sent  # newest first


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "crash"])
async def test_restart_with_devices_online_reports_every_device_offline(
    servers: Servers, stop_signal: signal.Signals
) -> None:
    first = await servers.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        alice, host, client = await paired_devices(http)
        host_ws = await open_socket(first, host)
        client_ws = await open_socket(first, client)
        before = (await http.get("/devices", headers=alice.headers)).json()
    assert {(d["id"], d["is_online"]) for d in before} == {(host.id, True), (client.id, True)}

    await servers.stop(first, stop_signal)
    await asyncio.gather(closed_with(host_ws), closed_with(client_ws))
    second = await servers.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        reply = await http.get("/devices", headers=alice.headers)

    assert reply.status_code == 200, reply.text
    after = reply.json()
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simbridge",
        "serve",
        "--port",
        str(free_port()),
        *args,
        env=server_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    message = stderr.decode()
    assert process.returncode == 2, message
    assert "SIMBRIDGE_WORKERS" in message
    assert "one worker" in message
    assert "Traceback" not in message
