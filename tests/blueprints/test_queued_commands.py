"""Commands for an offline host, their state, and waiting for the answer (contract §7), against
a real server and real sockets: `offline` / `ttl_seconds` on REST bodies, the `GET /sims` query
and socket command frames; queued commands written to the host when it next connects (v1 or
`since` socket), in the order queued, before live frames, never once their TTL has passed;
`GET /commands/{req_id}` through queued → sent → answered, expired and failed; `?wait=S` on the
three REST commands; restarts.

Time-to-live is driven by the `clock` fixture (a ManualClock the server reads), never by
sleeping. `wait` is real time: those tests use wait=1 where the wait must run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.helpers import (
    PONG,
    RECV_TIMEOUT,
    Account,
    Device,
    PairedWorld,
    Server,
    assert_error,
    assert_marker_arrives_next,
    assert_next_is_pong,
    assert_validation_error,
    bearer,
    dial,
    eventually,
    get_sims_command,
    is_offline,
    make_account,
    make_device,
    make_pair,
    pair_devices,
    paired_world,
    receive,
    send,
    socket,
)
from tests.postgres import fresh_postgres_database
from tests.processes import Servers

HEX32 = re.compile(r"^[0-9a-f]{32}$")
OFFLINE = "Host device is offline"
COMMANDS = ["sms", "call", "sims"]
CMD_OF = {"sms": "SEND_SMS", "call": "MAKE_CALL", "sims": "GET_SIMS"}
KIND_OF = {cmd: kind for kind, cmd in CMD_OF.items()}
STATE_FIELDS = {"req_id", "host_device_id", "cmd", "state", "created_at", "updated_at", "answer"}
DEFAULT_TTL = 86_400
MAX_TTL = 604_800
HOW = ["v1", "since"]  # how the host connects: a v1 socket or a `since` socket
MAX_PRESENCE_FRAMES = 100
UNLIMITED: dict[str, Any] = {"ws_messages_per_second": 1_000_000.0, "ws_message_burst": 1_000_000}


# --- REST -------------------------------------------------------------------------------------
def sms(host_id: int, **changes: Any) -> dict[str, Any]:
    return {"to_device_id": host_id, "sim": 1, "to": "+15550100", "body": "hello", **changes}


def call(host_id: int, **changes: Any) -> dict[str, Any]:
    return {"to_device_id": host_id, "sim": 2, "to": "*100#", **changes}


def rest_frame(command: str, req_id: str, **fields: Any) -> dict[str, Any]:
    """The frame a host gets for a REST `command` made with the defaults of `sms` / `call`."""
    if command == "sms":
        args: dict[str, Any] = {"sim": 1, "to": "+15550100", "body": "hello"}
    elif command == "call":
        args = {"sim": 2, "to": "*100#"}
    else:
        args = {}
    return {"type": "command", "cmd": CMD_OF[command], **args, **fields, "req_id": req_id}


async def by_rest(
    http: httpx.AsyncClient,
    caller: Account,
    command: str,
    host: Device | int,
    wait: Any = None,
    **policy: Any,
) -> httpx.Response:
    """`caller`'s REST `command` (one of COMMANDS) to `host`, with `policy` (`offline`,
    `ttl_seconds`, and for sms/call any body change) in the body, or in the query for `GET
    /sims`, and `?wait=` when `wait` is given."""
    host_id = host.id if isinstance(host, Device) else host
    params: dict[str, Any] = {} if wait is None else {"wait": wait}
    if command == "sims":
        params = {"host_device_id": host_id, **policy, **params}
        return await http.get("/sims", params=params, headers=caller.headers)
    body = sms(host_id, **policy) if command == "sms" else call(host_id, **policy)
    return await http.post(f"/{command}", params=params, json=body, headers=caller.headers)


def req_id_of(reply: httpx.Response, status: str) -> str:
    """The `req_id` of a 200 `{"status": status, "req_id"}` (and nothing else)."""
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body, dict) and set(body) == {"status", "req_id"}, body
    assert body["status"] == status, body
    assert isinstance(body["req_id"], str) and HEX32.match(body["req_id"]), body
    return body["req_id"]


async def queue_by_rest(
    http: httpx.AsyncClient, caller: Account, command: str, host: Device, **policy: Any
) -> str:
    """`command` with `offline: queue` to the offline `host`: answered `queued`; its req_id."""
    reply = await by_rest(http, caller, command, host, offline="queue", **policy)
    return req_id_of(reply, "queued")


# --- command states ---------------------------------------------------------------------------
def instant(value: Any) -> datetime:
    """An ISO 8601 timestamp with its UTC offset."""
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no UTC offset"
    return parsed


async def get_state(http: httpx.AsyncClient, caller: Account | None, req_id: str) -> httpx.Response:
    return await http.get(f"/commands/{req_id}", headers={} if caller is None else caller.headers)


async def state_of(http: httpx.AsyncClient, caller: Account, req_id: str) -> dict[str, Any]:
    """`GET /commands/{req_id}` as `caller`: 200 and the contract's shape."""
    reply = await get_state(http, caller, req_id)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert isinstance(body, dict) and set(body) == STATE_FIELDS, body
    assert body["req_id"] == req_id, body
    assert body["state"] in {"queued", "sent", "answered", "expired", "failed"}, body
    assert instant(body["created_at"]) <= instant(body["updated_at"]), body
    if body["state"] != "answered":
        assert body["answer"] is None, body
    return body


async def settles(
    http: httpx.AsyncClient, caller: Account, req_id: str, state: str
) -> dict[str, Any]:
    """The command reaches `state` (soon: a state may be written after the frame); its body."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await state_of(http, caller, req_id))
        return bool(seen["state"] == state)

    assert await eventually(reached), (state, seen)
    return seen


def expected_state(
    req_id: str, host: Device, cmd: str, state: str, answer: Any = None
) -> dict[str, Any]:
    """The fields of a command state that do not depend on time."""
    return {
        "req_id": req_id,
        "host_device_id": host.id,
        "cmd": cmd,
        "state": state,
        "answer": answer,
    }


def timeless(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if not name.endswith("_at")}


# --- socket frames ----------------------------------------------------------------------------
def command(req_id: str | None, cmd: str = "GET_SIMS", **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "command", "cmd": cmd, **extra}
    return frame if req_id is None else {**frame, "req_id": req_id}


def queued_reply(host: Device, req_id: Any) -> dict[str, Any]:
    return {"type": "queued", "req_id": req_id, "target_device_id": host.id}


def target_offline(host: Device, req_id: Any) -> dict[str, Any]:
    return {"error": "target_offline", "target_device_id": host.id, "req_id": req_id}


def answer_to(req_id: str, label: str = "ok") -> dict[str, Any]:
    return {"type": "event", "event": "SMS_SENT", "status": label, "req_id": req_id}


INVALID_POLICY = {"error": "invalid offline policy"}


async def queue_by_socket(client_ws: ClientConnection, host: Device, frame: dict[str, Any]) -> str:
    """`frame` (with `offline: queue`) sent for the offline `host`: the sender is told it is
    queued, with the frame's req_id (a new one when it had none); returns the req_id."""
    await send(client_ws, frame)
    reply = await receive(client_ws)
    assert set(reply) == {"type", "req_id", "target_device_id"}, reply
    req_id = reply["req_id"]
    if "req_id" in frame:
        assert req_id == frame["req_id"], reply
    else:
        assert isinstance(req_id, str) and req_id, reply
    assert reply == queued_reply(host, req_id)
    return str(req_id)


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, presence frames (§8, on `since` sockets) stepped over."""
    for _ in range(MAX_PRESENCE_FRAMES):
        frame = await receive(ws)
        if frame.get("type") != "presence":
            return frame
    raise AssertionError(f"{MAX_PRESENCE_FRAMES} presence frames in a row")


@dataclass
class HostLink:
    """A host's open socket, v1 or `since`. `next()` is its next command as the host would
    have had it on a v1 socket; on a `since` socket it checks the command's seq (one more than
    the last) and takes it off."""

    ws: ClientConnection
    host: Device
    how: str
    seq: int  # the latest seq handed to the host, as far as this test knows

    async def next(self) -> dict[str, Any]:
        if self.how == "v1":
            return await receive(self.ws)
        frame = await next_frame(self.ws)
        self.seq += 1
        assert frame.get("seq") == self.seq, f"{frame}: seq {self.seq} expected"
        return {name: value for name, value in frame.items() if name != "seq"}

    async def assert_rest_marker_next(self, http: httpx.AsyncClient) -> None:
        """Nothing else is on its way to the host: a `GET /sims` sent now is its next frame."""
        reply = await http.get(
            "/sims", params={"host_device_id": self.host.id}, headers=self.host.owner.headers
        )
        marker = get_sims_command(req_id_of(reply, "sent"))
        frame = await self.next()
        assert frame == marker, f"{frame} arrived before the marker"

    async def assert_marker_next(self, client_ws: ClientConnection) -> None:
        """Nothing else is on its way to the host: a command from `client_ws` (of a client
        paired with it) sent now is its next frame."""
        marker = command("marker", "MARKER", to_device_id=self.host.id)
        await send(client_ws, marker)
        frame = await self.next()
        assert frame == marker, f"{frame} arrived before the marker"


@asynccontextmanager
async def host_socket(
    server: Server, host: Device, how: str, since: int = 0, kept: int = 0
) -> AsyncIterator[HostLink]:
    """The host connects the `how` way (with `since` on a since socket, whose greeting must
    carry `kept`: the latest seq the host had, queued commands not yet counted, since they take
    their seq only once written after it); its greeting checked."""
    if how == "v1":
        async with socket(server, host) as ws:
            yield HostLink(ws, host, how, kept)
        return
    async with dial(server, host, host.owner.token, since=since) as ws:
        greeting = await receive(ws)
        assert greeting == {"type": "connected", "device_id": host.id, "seq": kept}, greeting
        yield HostLink(ws, host, how, since)


async def offline(http: httpx.AsyncClient, device: Device) -> None:
    assert await eventually(lambda: is_offline(http, device)), f"{device} still online"


async def elapsed(started: float) -> float:
    return asyncio.get_running_loop().time() - started


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[PairedWorld]:
    """A server without frame-rate limits (same ManualClock); alice's paired host and client."""
    async with paired_world(settings, **UNLIMITED) as served:
        yield served


# --- queued, then written when the host connects ----------------------------------------------
@pytest.mark.parametrize("how", HOW)
async def test_rest_commands_queued_for_an_offline_host_are_written_when_it_connects(
    world: PairedWorld, how: str
) -> None:
    host = world.pair.host
    alice = host.owner
    req_ids = {kind: await queue_by_rest(world.http, alice, kind, host) for kind in COMMANDS}
    for kind, req_id in req_ids.items():
        state = await state_of(world.http, alice, req_id)
        assert timeless(state) == expected_state(req_id, host, CMD_OF[kind], "queued")

    async with host_socket(world.live, host, how) as link:
        for kind, req_id in req_ids.items():
            assert await link.next() == rest_frame(kind, req_id)
        await link.assert_rest_marker_next(world.http)  # each written once, nothing else
        for kind, req_id in req_ids.items():
            state = await settles(world.http, alice, req_id, "sent")
            assert timeless(state) == expected_state(req_id, host, CMD_OF[kind], "sent")
    await offline(world.http, host)

    async with host_socket(world.live, host, "v1") as link:  # not written a second time
        await link.assert_rest_marker_next(world.http)


async def test_queued_sms_keeps_every_field_it_was_sent_with(world: PairedWorld) -> None:
    host = world.pair.host
    body = {"sim": 8, "to": "#31#+4915550100", "body": "héllo ✓ " * 50}
    req_id = await queue_by_rest(world.http, host.owner, "sms", host, ttl_seconds=600, **body)
    async with socket(world.live, host) as host_ws:
        assert await receive(host_ws) == {
            "type": "command",
            "cmd": "SEND_SMS",
            **body,
            "req_id": req_id,
        }


@pytest.mark.parametrize("how", HOW)
async def test_a_socket_command_queued_for_an_offline_host_is_written_as_sent(
    world: PairedWorld, how: str
) -> None:
    """The sender learns it is queued; the host later gets the frame as the sender wrote it
    (`offline` and `ttl_seconds` included, anything else too), with a req_id added only when
    it had none."""
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    own = command("own-1", "SEND_SMS", sim=2, to="+1555", body="hi", offline="queue", extra=[1])
    with_ttl = command("own-2", offline="queue", ttl_seconds=3600, to_device_id=host.id)
    without = command(None, "MAKE_CALL", sim=1, to="112", offline="queue")
    async with socket(world.live, client) as client_ws:
        assert await queue_by_socket(client_ws, host, own) == "own-1"
        assert await queue_by_socket(client_ws, host, with_ttl) == "own-2"
        generated = await queue_by_socket(client_ws, host, without)
        assert generated not in {"own-1", "own-2"}
        for req_id, cmd in [("own-1", "SEND_SMS"), ("own-2", "GET_SIMS"), (generated, "MAKE_CALL")]:
            assert timeless(await state_of(world.http, alice, req_id)) == expected_state(
                req_id, host, cmd, "queued"
            )

        async with host_socket(world.live, host, how) as link:
            assert await link.next() == own
            assert await link.next() == with_ttl
            assert await link.next() == {**without, "req_id": generated}
            await link.assert_marker_next(client_ws)
            for req_id in ("own-1", "own-2", generated):
                await settles(world.http, alice, req_id, "sent")
        await assert_next_is_pong(client_ws)  # no more feedback for the sender


@pytest.mark.parametrize("how", HOW)
async def test_queued_commands_are_written_in_the_order_queued(
    world: PairedWorld, how: str
) -> None:
    """REST and socket commands, interleaved, reach the host in the order they were queued."""
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    expected: list[dict[str, Any]] = []
    async with socket(world.live, client) as client_ws:
        for round_ in range(3):
            req_id = await queue_by_rest(world.http, alice, "sms", host, body=f"sms-{round_}")
            expected.append(rest_frame("sms", req_id, body=f"sms-{round_}"))
            frame = command(f"ws-{round_}", offline="queue", n=round_)
            await queue_by_socket(client_ws, host, frame)
            expected.append(frame)
            req_id = await queue_by_rest(world.http, alice, "call", host, ttl_seconds=600)
            expected.append(rest_frame("call", req_id))
            frame = command(None, offline="queue", ttl_seconds=600, n=round_)
            expected.append({**frame, "req_id": await queue_by_socket(client_ws, host, frame)})
            req_id = await queue_by_rest(world.http, alice, "sims", host)
            expected.append(rest_frame("sims", req_id))

        async with host_socket(world.live, host, how) as link:
            assert [await link.next() for _ in expected] == expected
            await link.assert_marker_next(client_ws)
            await link.assert_rest_marker_next(world.http)


@pytest.mark.parametrize("how", HOW)
async def test_queued_commands_come_before_any_live_frame(world: PairedWorld, how: str) -> None:
    """Live commands sent the moment the host is greeted (it is online from then on) come after
    every queued one."""
    host, client = world.pair.host, world.pair.client
    queued = [command(f"q-{n}", offline="queue") for n in range(30)]
    async with socket(world.live, client) as client_ws:
        for frame in queued:
            await queue_by_socket(client_ws, host, frame)
        async with host_socket(world.live, host, how) as link:
            live = command("live-ws")
            await send(client_ws, live)
            reply = await by_rest(world.http, host.owner, "sims", host)
            live_rest = rest_frame("sims", req_id_of(reply, "sent"))
            assert [await link.next() for _ in range(len(queued) + 2)] == [
                *queued,
                live,
                live_rest,
            ]
            await link.assert_marker_next(client_ws)
        await assert_next_is_pong(client_ws)  # the live one was sent: no error, no `queued`


async def drain(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Read `ws` until it closes, keeping what came."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            into.append(json.loads(raw))


FLOOD = 150


def seam_report(sent: list[dict[str, Any]], received: list[dict[str, Any]]) -> str:
    """What went wrong between the frames sent and those received, by req_id."""
    got = [frame.get("req_id") for frame in received]
    repeated = sorted({req_id for req_id in got if got.count(req_id) > 1}, key=str)
    missing = [frame["req_id"] for frame in sent if frame["req_id"] not in got]
    first = next(
        (n for n, pair in enumerate(zip(sent, received, strict=False)) if pair[0] != pair[1]), None
    )
    return f"repeated {repeated}, missing {missing}, first difference at {first}: {got[:8]}..."


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("head", [1, 25])
async def test_commands_sent_while_the_host_connects_arrive_once_each_in_order(
    world: PairedWorld, head: int, how: str
) -> None:
    """A client sends commands with `offline: queue` without pause; the host connects once
    `head` of them are queued, while the rest are still coming: those before the host is online
    are queued, the others go live; the host gets each exactly once, in the order sent, and the
    sender was told `queued` for a leading run of them. The host answers each as it comes:
    every answer reaches the client, every command ends `answered`."""
    host, client = world.pair.host, world.pair.client
    frames = [command(f"f-{n}", offline="queue", n=n) for n in range(FLOOD)]
    replies: list[dict[str, Any]] = []

    async def flood(client_ws: ClientConnection) -> None:
        for n, frame in enumerate(frames):
            await send(client_ws, frame)
            if n % 3 == 0:
                await asyncio.sleep(0)  # a yield, not a wait: lets the server and host run

    def queued_so_far() -> int:
        return sum(reply.get("type") == "queued" for reply in replies)

    def events() -> list[dict[str, Any]]:
        return [reply for reply in replies if reply.get("type") == "event"]

    async with socket(world.live, client) as client_ws:
        draining = asyncio.create_task(drain(client_ws, replies))
        flooding = asyncio.create_task(flood(client_ws))
        try:
            assert await eventually(lambda: queued_so_far() >= head), replies
            async with host_socket(world.live, host, how) as link:
                received = []
                for _ in frames:
                    try:
                        received.append(await link.next())
                    except TimeoutError:
                        break
                    await send(link.ws, answer_to(str(received[-1].get("req_id"))))
                await asyncio.wait_for(flooding, RECV_TIMEOUT)
                assert await eventually(lambda: len(events()) >= len(received)), replies
                await send(client_ws, {"type": "ping"})
                assert await eventually(lambda: PONG in replies), replies
                assert received == frames, seam_report(frames, received)
                await link.assert_marker_next(client_ws)
        finally:
            for task in (flooding, draining):
                task.cancel()
            await asyncio.gather(flooding, draining, return_exceptions=True)

    before_pong = replies[: replies.index(PONG)]
    assert events() == [answer_to(frame["req_id"]) for frame in frames]
    told = [reply.get("req_id") for reply in before_pong if reply.get("type") == "queued"]
    assert len(told) + len(frames) == len(before_pong), before_pong  # nothing else came
    assert [reply for reply in before_pong if reply.get("type") == "queued"] == [
        queued_reply(host, req_id) for req_id in told
    ]
    assert told == [frame["req_id"] for frame in frames[: len(told)]], told  # a leading run
    assert len(told) >= head, told

    async def all_answered() -> bool:
        for frame in frames:
            state = await state_of(world.http, host.owner, frame["req_id"])
            if state["state"] != "answered":
                return False
            assert state["answer"] == answer_to(frame["req_id"]), state
        return True

    assert await eventually(all_answered)


async def test_a_queued_command_is_kept_with_its_seq_and_replayed_like_any_command(
    world: PairedWorld,
) -> None:
    """On a `since` socket, queued commands come after the replay, taking the next seqs; they
    are then kept like any command written to the host, and replayed (not queued again)."""
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        async with host_socket(world.live, host, "since") as link:
            first = command("before", to_device_id=host.id)
            await send(client_ws, first)
            assert await link.next() == first  # seq 1
        await offline(world.http, host)

        rest_id = await queue_by_rest(world.http, host.owner, "sms", host)
        queued = command("queued-ws", offline="queue")
        await queue_by_socket(client_ws, host, queued)

        async with host_socket(world.live, host, "since", since=0, kept=1) as link:
            assert await link.next() == first  # the replay: seq 1
            assert await link.next() == rest_frame("sms", rest_id)  # seq 2
            assert await link.next() == queued  # seq 3
            await link.assert_marker_next(client_ws)  # seq 4
        await offline(world.http, host)

        async with host_socket(world.live, host, "since", since=1, kept=4) as link:
            assert await link.next() == rest_frame("sms", rest_id)
            assert await link.next() == queued
            assert await link.next() == command("marker", "MARKER", to_device_id=host.id)
            await link.assert_marker_next(client_ws)  # seq 5: nothing queued twice


@pytest.mark.parametrize("since", [1, 2, 10**6], ids=["latest", "latest+1", "far-beyond"])
async def test_queued_commands_come_whatever_the_since_of_the_host(
    world: PairedWorld, since: int
) -> None:
    """A host that had everything (or asks for nothing older than a seq beyond its latest,
    as a fresh device may) still gets its queued commands after the greeting, each with the
    next seq; they are not left `sent` without ever being written."""
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        async with host_socket(world.live, host, "since") as link:
            await send(client_ws, command("before", to_device_id=host.id))
            await link.next()  # seq 1
        await offline(world.http, host)
        rest_id = await queue_by_rest(world.http, host.owner, "sms", host)
        queued = command("queued-ws", offline="queue")
        await queue_by_socket(client_ws, host, queued)
        async with dial(world.live, host, host.owner.token, since=since) as ws:
            greeting = await receive(ws)
            assert greeting == {"type": "connected", "device_id": host.id, "seq": 1}, greeting
            assert await next_frame(ws) == {**rest_frame("sms", rest_id), "seq": 2}
            assert await next_frame(ws) == {**queued, "seq": 3}


async def test_a_queued_command_written_to_a_v1_socket_is_kept_for_a_later_since_socket(
    world: PairedWorld,
) -> None:
    host = world.pair.host
    req_id = await queue_by_rest(world.http, host.owner, "call", host)
    async with host_socket(world.live, host, "v1") as link:
        assert await link.next() == rest_frame("call", req_id)
    await offline(world.http, host)
    async with host_socket(world.live, host, "since", since=0, kept=1) as link:
        assert await link.next() == rest_frame("call", req_id)  # replayed with seq 1
        await link.assert_rest_marker_next(world.http)  # seq 2


# --- the answer to a queued command -----------------------------------------------------------
async def test_the_answer_to_a_socket_queued_command_reaches_the_client_that_queued_it(
    world: PairedWorld,
) -> None:
    host, asker = world.pair.host, world.pair.client
    other = await make_device(world.http, host.owner, "client", "other-client")
    await pair_devices(world.http, host.owner, host, other)
    async with socket(world.live, asker) as asker_ws, socket(world.live, other) as other_ws:
        await queue_by_socket(asker_ws, host, command("ask", offline="queue"))
        async with socket(world.live, host) as host_ws:
            assert await receive(host_ws) == command("ask", offline="queue")
            answer = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 1}], "req_id": "ask"}
            await send(host_ws, answer)
            assert await receive(asker_ws) == answer
            await assert_next_is_pong(host_ws)  # delivered: no error back to the host
            await assert_marker_arrives_next(host_ws, other, other_ws)  # not to the other
        await settles(world.http, host.owner, "ask", "answered")


async def test_the_answer_to_a_rest_queued_command_fans_out_to_online_clients(
    world: PairedWorld,
) -> None:
    host, first = world.pair.host, world.pair.client
    second = await make_device(world.http, host.owner, "client", "second-client")
    await pair_devices(world.http, host.owner, host, second)
    req_id = await queue_by_rest(world.http, host.owner, "sims", host)
    async with socket(world.live, first) as first_ws, socket(world.live, second) as second_ws:
        async with socket(world.live, host) as host_ws:
            assert await receive(host_ws) == rest_frame("sims", req_id)
            answer = {"type": "event", "event": "SIM_INFO", "sims": [], "req_id": req_id}
            await send(host_ws, answer)
            assert await receive(first_ws) == answer
            assert await receive(second_ws) == answer
            await assert_next_is_pong(host_ws)


# --- queue with the host online, and fail -------------------------------------------------------
async def test_queue_with_the_host_online_is_sent_at_once(world: PairedWorld) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        for kind in COMMANDS:
            reply = await by_rest(world.http, host.owner, kind, host, offline="queue")
            req_id = req_id_of(reply, "sent")
            assert await receive(host_ws) == rest_frame(kind, req_id)
            state = await settles(world.http, host.owner, req_id, "sent")
            assert timeless(state) == expected_state(req_id, host, CMD_OF[kind], "sent")


async def test_a_socket_command_with_queue_to_an_online_host_is_relayed_as_sent(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    frame = command("q-online", offline="queue", ttl_seconds=60)
    async with socket(world.live, host) as host_ws, socket(world.live, client) as client_ws:
        await send(client_ws, frame)
        assert await receive(host_ws) == frame
        await assert_next_is_pong(client_ws)  # no `queued` reply
        await settles(world.http, host.owner, "q-online", "sent")


@pytest.mark.parametrize("policy", [{}, {"offline": "fail"}], ids=["default", "fail"])
async def test_a_socket_command_with_fail_to_an_offline_host_gets_v1_target_offline(
    world: PairedWorld, policy: dict[str, Any]
) -> None:
    """v1 exactly: `target_offline`, nothing kept for later, state `failed`."""
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        await send(client_ws, command("refused", **policy))
        assert await receive(client_ws) == target_offline(host, "refused")
        await assert_next_is_pong(client_ws)
        state = await settles(world.http, host.owner, "refused", "failed")
        assert timeless(state) == expected_state("refused", host, "GET_SIMS", "failed")
        async with host_socket(world.live, host, "v1") as link:
            await link.assert_marker_next(client_ws)  # nothing was kept for the host
        assert (await state_of(world.http, host.owner, "refused"))["state"] == "failed"


async def test_rest_fail_to_an_offline_host_is_503_at_once_and_nothing_is_kept(
    world: PairedWorld,
) -> None:
    host = world.pair.host
    started = asyncio.get_running_loop().time()
    for kind in COMMANDS:
        for policy in ({"offline": "fail"}, {}):
            reply = await by_rest(world.http, host.owner, kind, host, wait=30, **policy)
            assert_error(reply, 503, OFFLINE)
            reply = await by_rest(world.http, host.owner, kind, host, **policy)
            assert_error(reply, 503, OFFLINE)
    assert await elapsed(started) < 5  # nothing waited for an answer that cannot come
    async with host_socket(world.live, host, "v1") as link:
        await link.assert_rest_marker_next(world.http)


# --- time to live -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
async def test_a_queued_command_whose_ttl_passes_is_expired_and_never_written(
    world: PairedWorld, clock: ManualClock, how: str
) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    async with socket(world.live, client) as client_ws:
        short_rest = await queue_by_rest(world.http, alice, "sms", host, ttl_seconds=60)
        long_rest = await queue_by_rest(world.http, alice, "call", host, ttl_seconds=600)
        await queue_by_socket(client_ws, host, command("short-ws", offline="queue", ttl_seconds=60))
        long_ws = command("long-ws", offline="queue", ttl_seconds=600)
        await queue_by_socket(client_ws, host, long_ws)

        clock.advance(59)
        for req_id in (short_rest, long_rest, "short-ws", "long-ws"):
            assert (await state_of(world.http, alice, req_id))["state"] == "queued", req_id

        clock.advance(2)  # 61 s: the short ones have expired, with no host in sight
        for req_id, cmd in ((short_rest, "SEND_SMS"), ("short-ws", "GET_SIMS")):
            state = await state_of(world.http, alice, req_id)
            assert timeless(state) == expected_state(req_id, host, cmd, "expired")
        for req_id in (long_rest, "long-ws"):
            assert (await state_of(world.http, alice, req_id))["state"] == "queued", req_id

        async with host_socket(world.live, host, how) as link:
            assert await link.next() == rest_frame("call", long_rest)  # seq 1 on a since socket
            assert await link.next() == long_ws  # seq 2: the expired took none
            await link.assert_marker_next(client_ws)
            await settles(world.http, alice, "long-ws", "sent")
        for req_id in (short_rest, "short-ws"):
            assert (await state_of(world.http, alice, req_id))["state"] == "expired", req_id


async def test_the_default_ttl_is_a_day(world: PairedWorld, clock: ManualClock) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    async with socket(world.live, client) as client_ws:
        old_rest = await queue_by_rest(world.http, alice, "sims", host)
        await queue_by_socket(client_ws, host, command("old-ws", offline="queue"))
        clock.advance(DEFAULT_TTL // 2)
        young_rest = await queue_by_rest(world.http, alice, "sims", host)
        young_ws = command("young-ws", offline="queue")
        await queue_by_socket(client_ws, host, young_ws)
        clock.advance(DEFAULT_TTL // 2 - 1)  # the old ones are a second short of a day
        assert (await state_of(world.http, alice, old_rest))["state"] == "queued"
        assert (await state_of(world.http, alice, "old-ws"))["state"] == "queued"
        clock.advance(2)  # a day and a second
        assert (await state_of(world.http, alice, old_rest))["state"] == "expired"
        assert (await state_of(world.http, alice, "old-ws"))["state"] == "expired"

        async with host_socket(world.live, host, "v1") as link:
            assert await link.next() == rest_frame("sims", young_rest)
            assert await link.next() == young_ws
            await link.assert_marker_next(client_ws)


async def test_ttl_seconds_1_and_604800_are_accepted(
    world: PairedWorld, clock: ManualClock
) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    async with socket(world.live, client) as client_ws:
        one_rest = await queue_by_rest(world.http, alice, "sms", host, ttl_seconds=1)
        week_rest = await queue_by_rest(world.http, alice, "sms", host, ttl_seconds=MAX_TTL)
        await queue_by_socket(client_ws, host, command("one-ws", offline="queue", ttl_seconds=1))
        week_ws = command("week-ws", offline="queue", ttl_seconds=MAX_TTL)
        await queue_by_socket(client_ws, host, week_ws)
        clock.advance(2)
        for req_id in (one_rest, "one-ws"):
            assert (await state_of(world.http, alice, req_id))["state"] == "expired", req_id
        clock.advance(MAX_TTL - 3)  # a second short of a week
        for req_id in (week_rest, "week-ws"):
            assert (await state_of(world.http, alice, req_id))["state"] == "queued", req_id
        async with host_socket(world.live, host, "v1") as link:
            assert await link.next() == rest_frame("sms", week_rest)
            assert await link.next() == week_ws
            await link.assert_marker_next(client_ws)


# --- command states -----------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["rest", "socket"])
async def test_a_command_state_goes_queued_sent_answered_with_the_first_answer(
    world: PairedWorld, clock: ManualClock, origin: str
) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    async with socket(world.live, client) as client_ws:
        if origin == "rest":
            req_id, cmd = await queue_by_rest(world.http, alice, "sms", host), "SEND_SMS"
        else:
            req_id, cmd = "life-1", "SEND_SMS"
            frame = command(req_id, cmd, sim=1, to="+1555", body="x", offline="queue")
            await queue_by_socket(client_ws, host, frame)
        queued = await state_of(world.http, alice, req_id)
        assert timeless(queued) == expected_state(req_id, host, cmd, "queued")
        created = instant(queued["created_at"])
        assert abs(created - clock()) < timedelta(minutes=1), (created, clock())

        clock.advance(10)
        async with socket(world.live, host) as host_ws:
            assert (await receive(host_ws))["req_id"] == req_id
            sent = await settles(world.http, alice, req_id, "sent")
            assert timeless(sent) == expected_state(req_id, host, cmd, "sent")
            assert sent["created_at"] == queued["created_at"]
            assert instant(sent["updated_at"]) > instant(queued["updated_at"]), sent

            clock.advance(10)
            first = answer_to(req_id, "first")
            await send(host_ws, first)
            answered = await settles(world.http, alice, req_id, "answered")
            assert timeless(answered) == expected_state(req_id, host, cmd, "answered", first)
            assert answered["created_at"] == queued["created_at"]
            assert instant(answered["updated_at"]) > instant(sent["updated_at"]), answered
            if origin == "socket":
                assert await receive(client_ws) == first

            # a second answer changes nothing; a later command's answer proves it was handled
            await send(host_ws, answer_to(req_id, "second"))
            later = req_id_of(await by_rest(world.http, alice, "sims", host), "sent")
            assert (await receive(host_ws))["req_id"] == later
            await send(host_ws, answer_to(later))
            await settles(world.http, alice, later, "answered")
            again = await state_of(world.http, alice, req_id)
            assert timeless(again) == expected_state(req_id, host, cmd, "answered", first)


async def test_commands_sent_live_have_a_state_too(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    async with socket(world.live, host) as host_ws, socket(world.live, client) as client_ws:
        await send(client_ws, command("live-1", "MAKE_CALL", sim=1, to="112"))
        assert (await receive(host_ws))["req_id"] == "live-1"
        await send(client_ws, command(None))
        generated = (await receive(host_ws))["req_id"]
        rest_id = req_id_of(await by_rest(world.http, alice, "call", host), "sent")
        assert (await receive(host_ws))["req_id"] == rest_id
        for req_id, cmd in (
            ("live-1", "MAKE_CALL"),
            (generated, "GET_SIMS"),
            (rest_id, "MAKE_CALL"),
        ):
            state = await settles(world.http, alice, req_id, "sent")
            assert timeless(state) == expected_state(req_id, host, cmd, "sent")

        event = {"type": "event", "event": "CALL_STATE", "state": "dialing", "req_id": "live-1"}
        await send(host_ws, event)
        assert await receive(client_ws) == event
        state = await settles(world.http, alice, "live-1", "answered")
        assert state["answer"] == event


async def test_an_answer_without_a_client_online_still_answers_the_command(
    world: PairedWorld,
) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        req_id = req_id_of(await by_rest(world.http, host.owner, "sims", host), "sent")
        assert (await receive(host_ws))["req_id"] == req_id
        answer = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 2}], "req_id": req_id}
        await send(host_ws, answer)
        assert (await receive(host_ws)).get("error") == "target_offline"  # v1 feedback
        state = await settles(world.http, host.owner, req_id, "answered")
        assert state["answer"] == answer


async def test_command_state_needs_a_valid_token_and_shows_only_the_callers_commands(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    bob = await make_account(world.http, "bob")
    rest_id = await queue_by_rest(world.http, alice, "sms", host)
    async with socket(world.live, client) as client_ws:
        await queue_by_socket(client_ws, host, command("alice-ws", offline="queue"))

    assert_error(await get_state(world.http, None, rest_id), 401)
    for token in ("garbage", alice.token + "x"):
        reply = await world.http.get(f"/commands/{rest_id}", headers=bearer(token))
        assert_error(reply, 401)
    for req_id in (rest_id, "alice-ws"):
        assert_error(await get_state(world.http, bob, req_id), 404)
        assert (await state_of(world.http, alice, req_id))["state"] == "queued"
    for unknown in ("0" * 32, "nope", rest_id[:-1]):
        assert_error(await get_state(world.http, alice, unknown), 404)
    unknown_reply = await get_state(world.http, alice, "0" * 32)
    hidden_reply = await get_state(world.http, bob, rest_id)
    assert unknown_reply.json() == hidden_reply.json()  # no existence oracle


async def test_each_account_sees_its_own_command_under_a_shared_req_id(
    world: PairedWorld,
) -> None:
    """Phones pick their own req_ids (counters, often): one another account also used never
    shows that account's command."""
    alice_host, alice_client = world.pair.host, world.pair.client
    bob = await make_account(world.http, "bob")
    bob_pair = await make_pair(world.http, bob)
    async with (
        socket(world.live, alice_client) as alice_ws,
        socket(world.live, bob_pair.client) as bob_ws,
    ):
        await queue_by_socket(alice_ws, alice_host, command("1", offline="queue"))
        await send(bob_ws, command("1", "MAKE_CALL", sim=1, to="112"))  # bob's host: offline
        assert await receive(bob_ws) == target_offline(bob_pair.host, "1")
    alice_view = await state_of(world.http, alice_host.owner, "1")
    assert timeless(alice_view) == expected_state("1", alice_host, "GET_SIMS", "queued")
    bob_view = await settles(world.http, bob, "1", "failed")
    assert timeless(bob_view) == expected_state("1", bob_pair.host, "MAKE_CALL", "failed")


async def test_a_queued_command_whose_host_is_deleted_fails_and_stays_visible(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    alice = host.owner
    bob = await make_account(world.http, "bob")
    rest_id = await queue_by_rest(world.http, alice, "call", host)
    async with socket(world.live, client) as client_ws:
        await queue_by_socket(client_ws, host, command("doomed", offline="queue"))
    reply = await world.http.delete(f"/devices/{host.id}", headers=alice.headers)
    assert reply.status_code == 200, reply.text
    for req_id, cmd in ((rest_id, "MAKE_CALL"), ("doomed", "GET_SIMS")):
        state = await settles(world.http, alice, req_id, "failed")
        assert timeless(state) == expected_state(req_id, host, cmd, "failed")
        assert_error(await get_state(world.http, bob, req_id), 404)


# --- wait ---------------------------------------------------------------------------------------
async def test_wait_replies_with_the_hosts_answer(world: PairedWorld) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        for kind in COMMANDS:
            waiting = asyncio.create_task(by_rest(world.http, host.owner, kind, host, wait=30))
            frame = await receive(host_ws)
            req_id = frame["req_id"]
            assert frame == rest_frame(kind, req_id)
            answer = {"type": "event", "event": "RESULT", "ok": True, "n": [1], "req_id": req_id}
            await send(host_ws, answer)
            await send(host_ws, answer_to(req_id, "second"))  # only the first one counts
            reply = await asyncio.wait_for(waiting, RECV_TIMEOUT)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"status": "answered", "req_id": req_id, "answer": answer}
            assert HEX32.match(req_id)
            state = await settles(world.http, host.owner, req_id, "answered")
            assert state["answer"] == answer
            for _ in range(2):  # v1's feedback, for each: no client was online to get it
                feedback = await receive(host_ws)
                assert feedback.get("error") == "target_offline", feedback
                assert feedback.get("req_id") == req_id, feedback


async def test_an_event_of_another_req_id_does_not_end_the_wait(world: PairedWorld) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        started = asyncio.get_running_loop().time()
        waiting = asyncio.create_task(by_rest(world.http, host.owner, "sims", host, wait=1))
        req_id = (await receive(host_ws))["req_id"]
        await send(host_ws, answer_to("someone-else"))
        await send(host_ws, {"type": "event", "event": "SMS_RECEIVED", "body": "unrelated"})
        reply = await asyncio.wait_for(waiting, RECV_TIMEOUT)
        assert req_id_of(reply, "sent") == req_id
        assert await elapsed(started) >= 0.9


async def test_a_wait_that_runs_out_replies_with_the_v1_body(world: PairedWorld) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        started = asyncio.get_running_loop().time()
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(by_rest(world.http, host.owner, kind, host, wait=1) for kind in COMMANDS)
            ),
            RECV_TIMEOUT,
        )
        took = await elapsed(started)
        assert 0.9 <= took < 4, took
        req_ids = [req_id_of(reply, "sent") for reply in replies]
        frames = [await receive(host_ws) for _ in COMMANDS]
        expected = [
            rest_frame(kind, req_id) for kind, req_id in zip(COMMANDS, req_ids, strict=True)
        ]
        assert sorted(frames, key=str) == sorted(expected, key=str)

        for req_id in req_ids:  # the commands are still followed after the wait
            await send(host_ws, answer_to(req_id, "late"))
        for req_id in req_ids:
            state = await settles(world.http, host.owner, req_id, "answered")
            assert state["answer"] == answer_to(req_id, "late")


async def test_a_wait_ends_with_the_v1_body_when_the_host_drops_mid_wait(
    world: PairedWorld,
) -> None:
    """The wait runs its full second (the drop neither ends it early nor breaks it)."""
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        started = asyncio.get_running_loop().time()
        waiting = asyncio.create_task(by_rest(world.http, host.owner, "sms", host, wait=1))
        req_id = (await receive(host_ws))["req_id"]
    await offline(world.http, host)
    reply = await asyncio.wait_for(waiting, RECV_TIMEOUT)
    assert req_id_of(reply, "sent") == req_id
    assert 0.9 <= await elapsed(started) < 4
    assert (await state_of(world.http, host.owner, req_id))["state"] == "sent"


async def test_wait_0_replies_at_once(world: PairedWorld) -> None:
    host = world.pair.host
    async with socket(world.live, host) as host_ws:
        started = asyncio.get_running_loop().time()
        reply = await by_rest(world.http, host.owner, "sims", host, wait=0)
        req_id = req_id_of(reply, "sent")
        assert await elapsed(started) < 0.9
        assert await receive(host_ws) == rest_frame("sims", req_id)


async def test_a_queued_command_with_wait_that_runs_out_replies_queued(
    world: PairedWorld,
) -> None:
    host = world.pair.host
    started = asyncio.get_running_loop().time()
    reply = await asyncio.wait_for(
        by_rest(world.http, host.owner, "sms", host, wait=1, offline="queue"), RECV_TIMEOUT
    )
    req_id = req_id_of(reply, "queued")
    assert 0.9 <= await elapsed(started) < 4
    assert (await state_of(world.http, host.owner, req_id))["state"] == "queued"
    async with socket(world.live, host) as host_ws:  # still queued for the host
        assert await receive(host_ws) == rest_frame("sms", req_id)


async def test_a_queued_command_answered_within_the_wait_replies_answered(
    world: PairedWorld,
) -> None:
    """The host is offline when the commands come (queued), connects during their wait, and
    answers: each waiting reply carries its answer."""
    host = world.pair.host
    commands = world.live.runtime.commands
    waiting = [
        asyncio.create_task(by_rest(world.http, host.owner, kind, host, wait=30, offline="queue"))
        for kind in COMMANDS
    ]
    try:
        # in the server's memory (a black box has no way to see it): all three are queued
        assert await eventually(lambda: commands.queued_count(host.id) == len(COMMANDS))
        async with socket(world.live, host) as host_ws:
            frames = [await receive(host_ws) for _ in COMMANDS]
            assert sorted(frame["cmd"] for frame in frames) == sorted(CMD_OF.values())
            for frame in frames:
                assert frame == rest_frame(KIND_OF[frame["cmd"]], frame["req_id"])
                await send(host_ws, answer_to(frame["req_id"], "from-the-queue"))
            replies = await asyncio.wait_for(asyncio.gather(*waiting), RECV_TIMEOUT)
        assert sorted((reply.json() for reply in replies), key=str) == sorted(
            (
                {
                    "status": "answered",
                    "req_id": frame["req_id"],
                    "answer": answer_to(frame["req_id"], "from-the-queue"),
                }
                for frame in frames
            ),
            key=str,
        )
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_settings(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[Settings]:
    """`settings` on each database: the SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield settings
        return
    async for url in fresh_postgres_database():
        yield replace(settings, database_url=url)


WAITERS = 24  # more than a database pool holds
SERVED_WITHIN = 3.0  # seconds: far below the waits' 30


async def test_waits_hold_no_database_connection_and_no_worker(store_settings: Settings) -> None:
    """Many replies waiting at once: other requests (which need the database) are served
    meanwhile, quickly, and every wait then gets its answer."""
    async with paired_world(store_settings, **UNLIMITED) as world:
        host = world.pair.host
        alice = host.owner
        async with socket(world.live, host) as host_ws:
            waiting = [
                asyncio.create_task(by_rest(world.http, alice, "sims", host, wait=30))
                for _ in range(WAITERS)
            ]
            try:

                async def commands_arrive() -> list[str]:
                    return [str((await receive(host_ws))["req_id"]) for _ in waiting]

                req_ids = await asyncio.wait_for(commands_arrive(), RECV_TIMEOUT)
                # every request waits now; others, which need the database, are served at once
                devices = await asyncio.wait_for(
                    world.http.get("/devices", headers=alice.headers), SERVED_WITHIN
                )
                assert devices.status_code == 200, devices.text
                states = await asyncio.wait_for(
                    asyncio.gather(*(state_of(world.http, alice, req_id) for req_id in req_ids)),
                    SERVED_WITHIN,
                )
                assert [state["state"] for state in states] == ["sent"] * WAITERS
                assert not any(task.done() for task in waiting)
                for req_id in req_ids:
                    await send(host_ws, answer_to(req_id))
                replies = await asyncio.wait_for(asyncio.gather(*waiting), RECV_TIMEOUT)
            finally:
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
        answered = {reply.json()["req_id"]: reply.json() for reply in replies}
        assert answered == {
            req_id: {"status": "answered", "req_id": req_id, "answer": answer_to(req_id)}
            for req_id in req_ids
        }


# --- bad input ----------------------------------------------------------------------------------
BAD_BODY_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"offline": "later"}, "offline"),
    ({"offline": ""}, "offline"),
    ({"offline": "QUEUE"}, "offline"),
    ({"offline": 1}, "offline"),
    ({"offline": "queue", "ttl_seconds": 0}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": MAX_TTL + 1}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": -1}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": 1.5}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": "sixty"}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": True}, "ttl_seconds"),
]
BAD_QUERY_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"offline": "later"}, "offline"),
    ({"offline": ""}, "offline"),
    ({"offline": "QUEUE"}, "offline"),
    ({"offline": "queue", "ttl_seconds": "0"}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": str(MAX_TTL + 1)}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": "-1"}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": "1.5"}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": "sixty"}, "ttl_seconds"),
    ({"offline": "queue", "ttl_seconds": ""}, "ttl_seconds"),
]


async def test_a_bad_offline_policy_is_422_and_nothing_is_sent_or_queued(
    world: PairedWorld,
) -> None:
    host = world.pair.host
    cases = {kind: BAD_QUERY_POLICIES if kind == "sims" else BAD_BODY_POLICIES for kind in COMMANDS}
    for kind, policies in cases.items():  # the host offline
        for policy, field in policies:
            reply = await by_rest(world.http, host.owner, kind, host, **policy)
            assert assert_validation_error(reply, field) == {field}, (kind, policy)
    async with host_socket(world.live, host, "v1") as link:  # nothing was queued
        for kind, policies in cases.items():  # the host online
            for policy, field in policies:
                reply = await by_rest(world.http, host.owner, kind, host, **policy)
                assert assert_validation_error(reply, field) == {field}, (kind, policy)
        await link.assert_rest_marker_next(world.http)  # nothing was sent


BAD_WAITS = ["31", "-1", "x", "1.5", "", "1e1", "100000000000000000000"]


async def test_a_bad_wait_is_422_and_nothing_is_sent_or_queued(world: PairedWorld) -> None:
    host = world.pair.host
    for kind in COMMANDS:
        for wait in BAD_WAITS:
            reply = await by_rest(world.http, host.owner, kind, host, wait=wait, offline="queue")
            assert assert_validation_error(reply, "wait") == {"wait"}, (kind, wait)
    async with host_socket(world.live, host, "v1") as link:
        for kind in COMMANDS:
            for wait in BAD_WAITS:
                reply = await by_rest(world.http, host.owner, kind, host, wait=wait)
                assert assert_validation_error(reply, "wait") == {"wait"}, (kind, wait)
        await link.assert_rest_marker_next(world.http)


BAD_FRAME_POLICIES: list[dict[str, Any]] = [
    {"offline": "later"},
    {"offline": ""},
    {"offline": "QUEUE"},
    {"offline": 1},
    {"offline": ["queue"]},
    {"offline": "queue", "ttl_seconds": 0},
    {"offline": "queue", "ttl_seconds": MAX_TTL + 1},
    {"offline": "queue", "ttl_seconds": -1},
    {"offline": "queue", "ttl_seconds": 1.5},
    {"offline": "queue", "ttl_seconds": "sixty"},
    {"offline": "queue", "ttl_seconds": True},
]


async def test_a_bad_offline_policy_on_a_socket_is_refused_and_nothing_is_relayed(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        for n, policy in enumerate(BAD_FRAME_POLICIES):  # the host offline
            await send(client_ws, command(f"bad-offline-{n}", **policy))
            assert await receive(client_ws) == INVALID_POLICY, policy
        async with host_socket(world.live, host, "v1") as link:
            await link.assert_marker_next(client_ws)  # nothing was queued
            for n, policy in enumerate(BAD_FRAME_POLICIES):  # the host online
                await send(client_ws, command(f"bad-online-{n}", **policy))
                assert await receive(client_ws) == INVALID_POLICY, policy
                await send(client_ws, command(None, **policy))
                assert await receive(client_ws) == INVALID_POLICY, policy
            await link.assert_marker_next(client_ws)  # nothing was sent
    for n in range(len(BAD_FRAME_POLICIES)):  # and no state was recorded
        for req_id in (f"bad-offline-{n}", f"bad-online-{n}"):
            assert_error(await get_state(world.http, host.owner, req_id), 404)


# --- v1 unchanged -------------------------------------------------------------------------------
async def test_a_v1_command_to_an_offline_host_is_not_queued(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        await send(client_ws, get_sims_command("v1-offline"))
        assert await receive(client_ws) == target_offline(host, "v1-offline")
        await assert_next_is_pong(client_ws)
        async with host_socket(world.live, host, "v1") as link:
            await link.assert_marker_next(client_ws)
        await offline(world.http, host)
        async with host_socket(world.live, host, "since", since=0, kept=1) as link:
            marker = command("marker", "MARKER", to_device_id=host.id)
            assert await link.next() == marker  # seq 1, kept: the refused command took none
            await link.assert_marker_next(client_ws)


# --- restarts -----------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The environment of a server process on each database: the SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    async for url in fresh_postgres_database():
        yield {"DATABASE_URL": url}


async def test_queued_commands_survive_a_graceful_restart(
    store_env: dict[str, str], servers: Servers
) -> None:
    first = await servers.start(**store_env)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
        host, client = pair.host, pair.client
        rest_id = await queue_by_rest(http, host.owner, "sms", host, body="after the restart")
        queued = command("ws-queued", offline="queue", ttl_seconds=3600)
        async with socket(first, client) as client_ws:
            await queue_by_socket(client_ws, host, queued)
        assert await servers.stop(first, signal.SIGTERM) == 0, first.log()

    second = await servers.start(**store_env)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        assert (await state_of(http, host.owner, rest_id))["state"] == "queued"
        async with host_socket(second, host, "v1") as link:
            assert await link.next() == rest_frame("sms", rest_id, body="after the restart")
            assert await link.next() == queued
            await link.assert_rest_marker_next(http)
            await settles(http, host.owner, rest_id, "sent")
            await settles(http, host.owner, "ws-queued", "sent")
