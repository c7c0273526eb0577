"""The device simulator (`simbridge simulate`, `simbridge.simulator`) against a real server:
a simulated host answers real client sockets and REST commands, raises incoming events, comes
back after its socket is dropped and resumes with `since` (contract §6) without answering
anything twice; the CLI as a real process (answers, stdin, SIGTERM, one-line errors), and the
interactive client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from simbridge.config import Settings
from simbridge.simulator import phone
from simbridge.simulator.account import Login, SimulatorError
from simbridge.simulator.connection import Backoff
from simbridge.simulator.host import SimulatedHost
from tests.helpers import (
    Account,
    LiveServer,
    Pair,
    assert_next_is_pong,
    dial,
    eventually,
    get_sims_command,
    make_account,
    make_device,
    receive,
    send,
    serving,
    socket,
)
from tests.processes import free_port

FAST = Backoff(first=0.01, cap=0.05, attempts=50)
LINE_TIMEOUT = 10.0


def login_of(server: LiveServer, account: Account) -> Login:
    return Login(server.url, account.username, account.password)


def event(name: str, req_id: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "event", "event": name, **fields, "req_id": req_id}


def sms_command(req_id: str, sim: int = 1) -> dict[str, Any]:
    return {
        "type": "command",
        "cmd": "SEND_SMS",
        "sim": sim,
        "to": "+15551234",
        "body": "Hi",
        "req_id": req_id,
    }


def secrets_absent(text: str, account: Account) -> None:
    assert account.password not in text
    assert account.token not in text
    assert "sbd_" not in text  # no device token either


async def test_the_host_answers_like_a_phone(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair
) -> None:
    """Commands from a client socket and from REST are answered; injected and timed incoming
    events reach the client."""
    lines: list[str] = []
    login = login_of(server, alice)
    async with (
        socket(server, pair.client) as client_ws,
        SimulatedHost(login, device_id=pair.host.id, answer_delay=0, output=lines.append) as host,
    ):
        await send(client_ws, get_sims_command("s1"))
        info = await receive(client_ws)
        assert info == event("SIM_INFO", "s1", sims=phone.SIMS)
        assert [sim["slot"] for sim in info["sims"]] == [1, 2]

        await send(client_ws, sms_command("m1", sim=2))
        assert await receive(client_ws) == event("SMS_SENT", "m1", status="ok")
        assert await receive(client_ws) == event("SMS_DELIVERED", "m1", status="ok")

        call = {"type": "command", "cmd": "MAKE_CALL", "sim": 1, "to": "+15551234", "req_id": "c1"}
        await send(client_ws, call)
        states = [(await receive(client_ws)) for _ in range(3)]
        assert states == [
            event("CALL_STATE", "c1", state=s) for s in ("dialing", "active", "ended")
        ]

        await send(client_ws, sms_command("bad-sim", sim=3))
        failed = await receive(client_ws)
        assert failed == event("SMS_SENT", "bad-sim", status="error", error="no SIM in slot 3")
        await assert_next_is_pong(client_ws)  # nothing more: no SMS_DELIVERED for a failure

        # A REST command waiting for its answer (contract §7) is answered too
        reply = await http.post(
            "/sms?wait=5",
            json={"to_device_id": pair.host.id, "sim": 1, "to": "+15551234", "body": "Hi"},
            headers=alice.headers,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "answered", body
        assert body["answer"] == event("SMS_SENT", body["req_id"], status="ok")
        assert await receive(client_ws) == body["answer"]  # REST's answers go to every client
        assert (await receive(client_ws))["event"] == "SMS_DELIVERED"

        host.inject(phone.incoming_sms("+15551234", "hello there"))
        host.inject(phone.incoming_call("+15559876"))
        assert await receive(client_ws) == {
            "type": "event",
            "event": "INCOMING_SMS",
            "sim": 1,
            "from": "+15551234",
            "body": "hello there",
        }
        assert await receive(client_ws) == {
            "type": "event",
            "event": "INCOMING_CALL",
            "sim": 1,
            "from": "+15559876",
        }
    output = "\n".join(lines)
    assert f'< {{"type":"connected","device_id":{pair.host.id}' in output, output
    assert '> {"type":"event","event":"SIM_INFO"' in output, output
    secrets_absent(output, alice)

    async with (
        socket(server, pair.client) as client_ws,
        SimulatedHost(login, device_id=pair.host.id, incoming_sms_every=0.05, output=lines.append),
    ):
        for number in (1, 2):
            frame = await receive(client_ws)
            assert frame["event"] == "INCOMING_SMS", frame
            assert frame["body"] == f"Simulated message {number}", frame


async def test_a_dropped_host_comes_back_and_resumes_where_it_left_off(
    server: LiveServer, alice: Account, pair: Pair
) -> None:
    """The first connection skips what was kept from before; after a drop the host reconnects
    with `since` = the last seq it saw: the command queued meanwhile is answered, and what it
    had answered already is not replayed, so it is not answered twice."""
    hub = server.runtime.hub
    # A command handed to the host device before the simulator existed (seq 1)
    async with dial(server, pair.host, alice.token, since=0) as old_host:
        assert (await receive(old_host))["type"] == "connected"
        async with socket(server, pair.client) as client_ws:
            await send(client_ws, get_sims_command("before"))
            frames = [await receive(old_host) for _ in range(3)]  # presence: offline, online
            assert frames[-1] == {**get_sims_command("before"), "seq": 1}, frames
    lines: list[str] = []
    backoff = Backoff(first=1.0, cap=1.0, attempts=5)  # away for 0.5-1 s: time to queue
    host = SimulatedHost(
        login_of(server, alice),
        device_id=pair.host.id,
        answer_delay=0,
        output=lines.append,
        backoff=backoff,
    )
    async with socket(server, pair.client) as client_ws, host:
        assert host.link.latest_seq == 1  # greeted with seq 1, nothing replayed
        await send(client_ws, get_sims_command("first"))
        assert (await receive(client_ws))["req_id"] == "first"
        assert host.link.latest_seq == 2

        session = hub.session_of(pair.host.id)
        assert session is not None
        await hub.close_matching([session], 1011, "keepalive ping timeout")
        assert await eventually(lambda: not host.link.connected.is_set())
        queued = get_sims_command("while-away", offline="queue")
        await send(client_ws, queued)
        assert await receive(client_ws) == {
            "type": "queued",
            "req_id": "while-away",
            "target_device_id": pair.host.id,
        }
        answer = await receive(client_ws)  # once the host is back
        assert answer == event("SIM_INFO", "while-away", sims=phone.SIMS)
        await assert_next_is_pong(client_ws)  # and no second answer to "first"
        assert host.link.latest_seq == 3
    received = [json.loads(line[2:]) for line in lines if line.startswith("< ")]
    assert [frame.get("req_id") for frame in received if frame["type"] == "command"] == [
        "first",
        "while-away",
    ], received
    greetings = [frame for frame in received if frame["type"] == "connected"]
    assert [greeting["seq"] for greeting in greetings] == [1, 2], greetings


async def test_reconnecting_is_bounded_and_a_takeover_is_not_fought(settings: Settings) -> None:
    """Another socket for the device replaces the simulator's (4000): it stops at once. A
    server that stays away ends it after `attempts` failed reconnections."""
    quiet: dict[str, Any] = {"output": lambda _: None}
    async with serving(settings, graceful_shutdown_seconds=0.1) as served:  # stopped below
        bob = await make_account(served.http, "bob")
        host = await make_device(served.http, bob, "host")
        login = Login(served.live.url, "bob", bob.password)

        simulated = SimulatedHost(login, device_id=host.id, **quiet)
        running = asyncio.create_task(simulated.run(asyncio.Event()))
        await asyncio.wait_for(simulated.wait_connected(), LINE_TIMEOUT)
        async with socket(served.live, host):
            with pytest.raises(SimulatorError, match="4000: another connection took this device"):
                await asyncio.wait_for(running, LINE_TIMEOUT)

        backoff = Backoff(first=0.01, cap=0.02, attempts=3)
        simulated = SimulatedHost(login, device_id=host.id, backoff=backoff, **quiet)
        running = asyncio.create_task(simulated.run(asyncio.Event()))
        await asyncio.wait_for(simulated.wait_connected(), LINE_TIMEOUT)
    with pytest.raises(SimulatorError, match="gave up after 3 attempts"):
        await asyncio.wait_for(running, LINE_TIMEOUT)


# --- the CLI, as a process ------------------------------------------------------------------
@asynccontextmanager
async def simulate(
    tmp_path: Path, *args: str, password: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m simbridge simulate ARGS`, the password in its environment; killed (by its own
    PID) if it is still running afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simbridge",
        "simulate",
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SIMBRIDGE_SIM_PASSWORD": password},
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def line_with(
    process: asyncio.subprocess.Process, wanted: Callable[[str], bool], seen: list[str]
) -> str:
    """The next stdout line for which `wanted` is true (every line read goes to `seen`)."""
    assert process.stdout is not None
    try:
        async with asyncio.timeout(LINE_TIMEOUT):
            while raw := await process.stdout.readline():
                seen.append(raw.decode())
                if wanted(seen[-1]):
                    return seen[-1]
    except TimeoutError:
        pass
    raise AssertionError(f"no such line; output so far:\n{''.join(seen)}")


def is_greeting(line: str) -> bool:
    return line.startswith('< {"type":"connected"')


async def terminated(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM to our process; its exit code and the rest of its stdout and stderr."""
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), LINE_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


async def test_simulate_host_and_client_as_processes(
    tmp_path: Path, server: LiveServer, alice: Account, pair: Pair
) -> None:
    """`simulate host` answers a command typed into `simulate client` (a new client device,
    "laptop", that pairs itself with the host) and raises what its stdin asks for; SIGTERM
    ends both with exit 0."""
    login = ("--url", server.url, "--username", alice.username)
    host_args = ("--device-id", str(pair.host.id), "--answer-delay", "0", "--stdin")
    client_args = ("--device-name", "laptop", "--host-device-id", str(pair.host.id))
    host_seen: list[str] = []
    seen: list[str] = []
    async with (
        simulate(tmp_path, "host", *login, *host_args, password=alice.password) as host,
        simulate(tmp_path, "client", *login, *client_args, password=alice.password) as client,
    ):
        await line_with(host, is_greeting, host_seen)
        await line_with(client, is_greeting, seen)
        assert client.stdin is not None and host.stdin is not None
        client.stdin.write(b"sims\n")
        await client.stdin.drain()
        sent = await line_with(client, lambda line: '"cmd":"GET_SIMS"' in line, seen)
        assert sent.startswith("> ") and f'"to_device_id":{pair.host.id}' in sent, sent
        answer = await line_with(client, lambda line: '"event":"SIM_INFO"' in line, seen)
        assert answer.startswith("< ") and '"slot":2' in answer, answer

        host.stdin.write(b"sms +15551234 hello from stdin\nnonsense\n")
        await host.stdin.drain()
        incoming = await line_with(client, lambda line: "INCOMING_SMS" in line, seen)
        frame = json.loads(incoming.removeprefix("< "))
        assert {k: v for k, v in frame.items() if k != "seq"} == phone.incoming_sms(
            "+15551234", "hello from stdin"
        )
        await line_with(host, lambda line: line.startswith("# expected `sms"), host_seen)
        (host_code, host_rest), (code, rest) = await asyncio.gather(
            terminated(host), terminated(client)
        )
    assert (host_code, code) == (0, 0), (host_rest, rest)
    assert any(line.startswith("# paired with host") for line in seen), seen
    output = "".join(host_seen + seen) + host_rest + rest
    assert "Traceback" not in output, output
    secrets_absent(output, alice)


async def test_devices_by_name_and_the_reasons_to_stop(
    tmp_path: Path, server: LiveServer, alice: Account, pair: Pair
) -> None:
    """A device name is created once, then reused; a wrong password, a server that is not
    there, a device of the wrong type or of nobody stop the simulator with one line. As a
    process: that line on stderr, exit 1, no traceback."""
    login = login_of(server, alice)
    quiet = {"output": lambda _: None, "backoff": FAST}
    async with SimulatedHost(login, device_name="sim-phone", **quiet) as first:
        created = first.device_id
    async with SimulatedHost(login, device_name="sim-phone", **quiet) as again:
        assert again.device_id == created
    assert created not in (pair.host.id, pair.client.id)

    nowhere = f"http://127.0.0.1:{free_port()}"
    cases = [
        (
            Login(server.url, "alice", "not-the-password"),
            {"device_id": pair.host.id},
            f"wrong username or password for {server.url}",
        ),
        (
            Login(nowhere, "alice", alice.password),
            {"device_id": pair.host.id},
            f"cannot reach {nowhere}",
        ),
        (login, {"device_id": pair.client.id}, f"device {pair.client.id} is a client, not a host"),
        (login, {"device_id": 999}, f"device 999 is not a device of alice on {server.url}"),
    ]
    for case_login, which, expected in cases:
        with pytest.raises(SimulatorError) as stopped:
            async with SimulatedHost(case_login, **which, **quiet):
                pass
        assert str(stopped.value).startswith(expected), (expected, stopped.value)

    args = ("host", "--url", server.url, "--username", "alice", "--device-id", str(pair.host.id))
    async with simulate(tmp_path, *args, password="not-the-password") as process:
        _, err = await asyncio.wait_for(process.communicate(), LINE_TIMEOUT)
    assert process.returncode == 1, err
    assert err.decode() == f"simbridge simulate: wrong username or password for {server.url}\n"
