"""Delivery that survives a dropped connection (contract §6), against real sockets: `since`,
`seq`, the greeting's `seq` and `gap`, replay, the seam between replay and live frames,
pruning by count and by age, restarts, and v1 sockets left exactly as they were.

Every frame the relay hands to a device gets the next `seq` of that device and is kept, so a
test follows each device's inbox with an `Inbox`: what the device should have been handed, in
seq order (markers included: they are relayed frames too). A frame received on a `since`
socket is compared as a JSON value with the frame sent plus its `seq`. Presence frames (§8)
have no seq and are not kept; the readers here step over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.helpers import (
    RECV_TIMEOUT,
    Device,
    PairedWorld,
    Server,
    assert_error,
    assert_marker_arrives_next,
    assert_next_is_pong,
    dial,
    eventually,
    get_sims_command,
    handshake,
    history,
    is_offline,
    is_online,
    make_account,
    make_device,
    make_pair,
    marker_for,
    pair_devices,
    paired_world,
    receive,
    send,
    socket,
)
from tests.postgres import fresh_postgres_database
from tests.processes import GRACEFUL_SECONDS, ServerProcess, Servers

# Frame-rate limits lifted: these tests send hundreds of frames from one device on purpose.
UNLIMITED: dict[str, Any] = {"ws_messages_per_second": 1_000_000.0, "ws_message_burst": 1_000_000}
UNLIMITED_ENV = {
    "SIMBRIDGE_WS_MESSAGES_PER_SECOND": "1000000",
    "SIMBRIDGE_WS_MESSAGE_BURST": "1000000",
}
MAX_PRESENCE_FRAMES = 100  # presence frames (§8) stepped over in a row, at most


# --- frames -----------------------------------------------------------------------------------
def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """A frame's JSON object; a member written twice (two `seq`s, say) fails the test."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), f"a member written twice in {raw!r}"
        return dict(pairs)

    frame = json.loads(raw, object_pairs_hook=unique)
    assert isinstance(frame, dict), raw
    return frame


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame on a `since` socket, presence frames (§8) stepped over."""
    for _ in range(MAX_PRESENCE_FRAMES):
        frame = parse_frame(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        if frame.get("type") != "presence":
            return frame
    raise AssertionError(f"{MAX_PRESENCE_FRAMES} presence frames in a row")


def event_to(client: Device, label: str, **extra: Any) -> dict[str, Any]:
    """An event for `client` alone (`to_device_id`), told apart by `label`."""
    return {
        "type": "event",
        "event": "SMS_RECEIVED",
        "to_device_id": client.id,
        "body": label,
        "req_id": label,
        **extra,
    }


def target_offline(target: Device, req_id: Any) -> dict[str, Any]:
    return {"error": "target_offline", "target_device_id": target.id, "req_id": req_id}


def greeting_of(device: Device, seq: int, gap: bool = False) -> dict[str, Any]:
    """The greeting of a `since` socket: `gap` appears only when it is true."""
    greeting = {"type": "connected", "device_id": device.id, "seq": seq}
    return {**greeting, "gap": True} if gap else greeting


@dataclass
class Inbox:
    """What the relay should have handed one device, in seq order: frame n has seq n."""

    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seq(self) -> int:
        """The latest seq given to the device (0: none yet)."""
        return len(self.frames)

    def add(self, frame: dict[str, Any]) -> int:
        """Note `frame` as handed to the device; returns its seq."""
        self.frames.append(frame)
        return self.seq

    def with_seq(self, seq: int) -> dict[str, Any]:
        """Frame `seq` as a `since` socket receives it."""
        return {**self.frames[seq - 1], "seq": seq}

    def after(self, since: int, kept_from: int = 1) -> list[dict[str, Any]]:
        """What a replay after `since` holds, when the frames from seq `kept_from` are kept."""
        return [self.with_seq(seq) for seq in range(max(since, kept_from - 1) + 1, self.seq + 1)]


# --- sockets ----------------------------------------------------------------------------------
@asynccontextmanager
async def since_socket(
    server: Server, device: Device, since: int | str
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """An open `since` socket of `device` (its owner's token), and its greeting."""
    async with dial(server, device, device.owner.token, since=since) as ws:
        greeting = parse_frame(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        yield ws, greeting


async def assert_pong_next(ws: ClientConnection) -> None:
    """Nothing more came for a `since` socket before its own ping's pong (presence frames
    aside). The pong is written once the ping is read, so this catches a surplus frame the
    relay wrote before that; `assert_marker_next` is the stronger proof, but it adds a frame."""
    await send(ws, {"type": "ping"})
    frame = await next_frame(ws)
    assert frame == {"type": "pong"}, f"{frame} arrived before the pong"


async def receive_replay(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` frames of a `since` socket."""
    return [await next_frame(ws) for _ in range(count)]


async def assert_marker_next(
    sender_ws: ClientConnection, recipient: Device, recipient_ws: ClientConnection, inbox: Inbox
) -> None:
    """Nothing else is on its way to `recipient` (a `since` socket): a marker relayed to it now,
    with the next seq of its `inbox`, is the next frame it receives."""
    marker = marker_for(recipient)
    seq = inbox.add(marker)
    await send(sender_ws, marker)
    frame = await next_frame(recipient_ws)
    assert frame == {**marker, "seq": seq}, f"{frame} arrived before the marker (seq {seq})"


async def events_to_offline_client(
    host_ws: ClientConnection, client: Device, inbox: Inbox, labels: list[str]
) -> None:
    """The host sends an event to its offline `client` for each label; each is answered with
    v1's `target_offline`, and kept for the client."""
    for label in labels:
        event = event_to(client, label)
        await send(host_ws, event)
        assert await receive(host_ws) == target_offline(client, label)
        inbox.add(event)


async def replays(
    server: Server, device: Device, since: int | str, inbox: Inbox, kept_from: int = 1
) -> dict[str, Any]:
    """`device` connects with `since`: it is greeted with its latest seq (and `gap` exactly when
    a frame after `since` is no longer kept), then replayed every kept frame after `since`, in
    order. Returns the greeting."""
    k = int(since)
    async with since_socket(server, device, since) as (ws, greeting):
        gap = k < min(kept_from - 1, inbox.seq)  # a seq in (k, latest] is no longer kept
        assert greeting == greeting_of(device, inbox.seq, gap), (since, greeting)
        expected = inbox.after(k, kept_from)
        assert await receive_replay(ws, len(expected)) == expected, since
        await assert_pong_next(ws)
    return greeting


async def offline(http: httpx.AsyncClient, device: Device) -> None:
    assert await eventually(lambda: is_offline(http, device)), f"{device} still online"


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[PairedWorld]:
    """A server without frame-rate limits; alice's host and client, paired."""
    async with paired_world(settings, **UNLIMITED) as served:
        yield served


@dataclass
class Team:
    host: Device
    first: Device  # paired first
    second: Device


@pytest.fixture
async def team(world: PairedWorld) -> Team:
    """The world's host with a second client."""
    host, first = world.pair.host, world.pair.client
    second = await make_device(world.http, host.owner, "client", "second-client")
    await pair_devices(world.http, host.owner, host, second)
    return Team(host, first, second)


# --- replay -----------------------------------------------------------------------------------
async def test_events_for_an_offline_client_are_replayed_in_order_then_live_ones_follow(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, [f"sms-{n}" for n in range(1, 51)])

        async with since_socket(world.live, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 50)
            replayed = await receive_replay(client_ws, 50)
            assert [frame["seq"] for frame in replayed] == list(range(1, 51))
            assert replayed == inbox.after(0)
            live = event_to(client, "live")
            await send(host_ws, live)
            assert await next_frame(client_ws) == {**live, "seq": inbox.add(live)}
            assert inbox.seq == 51
            await assert_next_is_pong(host_ws)  # delivered: no target_offline this time
            await assert_marker_next(host_ws, client, client_ws, inbox)

        # the same again from other positions: a replay keeps the frames for the next one
        for since in (20, 0, inbox.seq - 1, inbox.seq):
            async with since_socket(world.live, client, since) as (client_ws, greeting):
                assert greeting == greeting_of(client, inbox.seq), since
                expected = inbox.after(since)
                assert await receive_replay(client_ws, len(expected)) == expected, since
                await assert_marker_next(host_ws, client, client_ws, inbox)


@pytest.mark.parametrize(
    "since", [4, 1000, 2**63 - 1, 2**64], ids=["latest+1", "1000", "2**63-1", "2**64"]
)
async def test_since_beyond_the_latest_seq_is_accepted_and_replays_nothing(
    world: PairedWorld, since: int
) -> None:
    """(K, S] is empty when K > S: no gap, no replay, and live frames still come (with the
    next seq, even though it is below K)."""
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["a", "b", "c"])
        async with since_socket(world.live, client, since) as (client_ws, greeting):
            assert greeting == greeting_of(client, 3)
            await assert_marker_next(host_ws, client, client_ws, inbox)


@pytest.mark.parametrize("since", ["00", "0003"])
async def test_since_with_leading_zeros_is_the_same_number(world: PairedWorld, since: str) -> None:
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["a", "b", "c", "d"])
    await replays(world.live, client, since, inbox)


async def test_a_device_with_nothing_kept_is_greeted_with_seq_0(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    async with since_socket(world.live, host, 0) as (host_ws, greeting):
        assert greeting == greeting_of(host, 0)
        async with since_socket(world.live, client, 0) as (client_ws, client_greeting):
            assert client_greeting == greeting_of(client, 0)
            await assert_marker_next(client_ws, host, host_ws, Inbox())
            await assert_marker_next(host_ws, client, client_ws, Inbox())


async def test_an_answer_for_a_client_that_dropped_is_replayed_to_it(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, host) as host_ws:
        async with since_socket(world.live, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 0)
            await send(client_ws, get_sims_command("ask-1"))
            assert await receive(host_ws) == get_sims_command("ask-1")
        await offline(world.http, client)

        answer = {"type": "event", "event": "SIM_INFO", "sims": [{"slot": 1}], "req_id": "ask-1"}
        await send(host_ws, answer)
        assert await receive(host_ws) == target_offline(client, "ask-1")  # v1's feedback
        inbox.add(answer)

        async with since_socket(world.live, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 1)
            assert await next_frame(client_ws) == inbox.with_seq(1)
            await assert_marker_next(host_ws, client, client_ws, inbox)


async def test_seq_is_a_member_of_its_own_even_when_the_sender_wrote_one(
    world: PairedWorld,
) -> None:
    """A sender's own `seq` (plainly, or spelled with escapes) gives way to the relay's: the
    frame has one `seq` member, the recipient's."""
    host, client = world.pair.host, world.pair.client
    plain = f'{{"type":"event","event":"X","to_device_id":{client.id},"seq":99}}'
    escaped = f'{{"type":"event","event":"Y","to_device_id":{client.id},"se\\u0071":"no"}}'
    async with socket(world.live, host) as host_ws:
        async with since_socket(world.live, client, 0) as (client_ws, _):
            for seq, raw in enumerate([plain, escaped], start=1):
                await host_ws.send(raw)
                assert await next_frame(client_ws) == {**json.loads(raw), "seq": seq}
        await offline(world.http, client)
        await host_ws.send(plain)
        assert (await receive(host_ws))["error"] == "target_offline"
        async with since_socket(world.live, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 3)
            sent = [plain, escaped, plain]
            assert await receive_replay(client_ws, 3) == [
                {**json.loads(raw), "seq": seq} for seq, raw in enumerate(sent, start=1)
            ]


# --- the seam between replay and live frames ----------------------------------------------------
FLOOD = 200
ITERATIONS = 20


async def flood(
    host_ws: ClientConnection,
    client: Device,
    head: int,
    head_sent: asyncio.Event,
    stride: int,
) -> list[dict[str, Any]]:
    """The host sends FLOOD events to `client`, yielding to the loop every `stride` frames;
    `head_sent` is set once `head` of them are sent."""
    sent = []
    for n in range(FLOOD):
        if n == head:
            head_sent.set()
        event = event_to(client, f"flood-{n}")
        await send(host_ws, event)
        sent.append(event)
        if n % stride == 0:
            await asyncio.sleep(0)  # a yield, not a wait: lets the server and the client run
    head_sent.set()
    return sent


async def drain(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Read `ws` until it closes (the host's `target_offline` replies), keeping what came."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            into.append(json.loads(raw))


LAST = f"flood-{FLOOD - 1}"


async def receive_up_to(
    ws: ClientConnection, count: int, last_body: str | None = None
) -> list[dict[str, Any]]:
    """Up to `count` frames of a `since` socket, stopping after the one whose body is
    `last_body` or after RECV_TIMEOUT without a frame (what is missing then shows in the
    caller's assertions, rather than as a timeout)."""
    frames: list[dict[str, Any]] = []
    for _ in range(count):
        try:
            frame = await next_frame(ws)
        except TimeoutError:
            break
        frames.append(frame)
        if last_body is not None and frame.get("body") == last_body:
            break
    return frames


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("iteration", range(ITERATIONS))
async def test_a_client_connecting_during_a_flood_gets_every_seq_once_in_order(
    world: PairedWorld, iteration: int
) -> None:
    """The client connects with since=0 while the host floods it, and on odd iterations drops
    mid-way and reconnects with the last seq it got: from replay and live frames together it
    receives seq 1..FLOOD exactly once each, in order, then nothing else."""
    host, client = world.pair.host, world.pair.client
    head = (iteration * 37) % FLOOD  # sent before the client dials
    stride = 1 + iteration % 7
    drop_after = 20 + (iteration * 53) % (FLOOD - 40) if iteration % 2 else FLOOD + 1
    replies: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    greetings: list[dict[str, Any]] = []
    marker = marker_for(client)
    async with socket(world.live, host) as host_ws:
        draining = asyncio.create_task(drain(host_ws, replies))
        head_sent = asyncio.Event()
        flooding = asyncio.create_task(flood(host_ws, client, head, head_sent, stride))
        try:
            await asyncio.wait_for(head_sent.wait(), RECV_TIMEOUT)
            since = 0
            for want in (drop_after, FLOOD + 1):  # a second socket if the first dropped early
                async with since_socket(world.live, client, since) as (client_ws, greeting):
                    greetings.append(greeting)
                    received += await receive_up_to(client_ws, want, LAST)
                    if want > FLOOD or received[-1].get("body") == LAST:
                        sent = await asyncio.wait_for(flooding, RECV_TIMEOUT)
                        await send(host_ws, marker)  # after it, nothing but the marker
                        after_marker = await next_frame(client_ws)
                        break
                    since = received[-1].get("seq", 0)
        finally:
            await cancel(flooding, draining)

    seqs = [frame.get("seq") for frame in received]
    expected = list(range(1, FLOOD + 1))
    missing = sorted(set(expected) - set(seqs))
    repeated = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    assert seqs == expected, f"missing {missing}, repeated {repeated}; greetings {greetings}"
    assert received == Inbox(sent).after(0)
    assert after_marker == {**marker, "seq": FLOOD + 1}
    for greeting in greetings:
        assert greeting == greeting_of(client, greeting.get("seq", -1)), greeting
    assert all(reply.get("error") == "target_offline" for reply in replies), replies


# --- v1 sockets ---------------------------------------------------------------------------------
async def test_v1_sockets_get_the_v1_greeting_and_the_senders_bytes(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    event = (
        f'{{ "event":"SMS_RECEIVED",  "type":"event","to_device_id":{client.id},"body":"h\\u00e9"}}'
    )
    with_seq = f'{{"type":"event","event":"X","to_device_id":{client.id},"seq":7}}'
    command = '{"req_id":"c-1" , "type":"command","cmd":"GET_SIMS"}'
    async with dial(world.live, host, host.owner.token) as host_ws:
        greeting = await asyncio.wait_for(host_ws.recv(), RECV_TIMEOUT)
        assert parse_frame(greeting) == {"type": "connected", "device_id": host.id}
        async with dial(world.live, client, client.owner.token) as client_ws:
            greeting = await asyncio.wait_for(client_ws.recv(), RECV_TIMEOUT)
            assert parse_frame(greeting) == {"type": "connected", "device_id": client.id}
            for raw in (event, with_seq):
                await host_ws.send(raw)
                assert await asyncio.wait_for(client_ws.recv(), RECV_TIMEOUT) == raw
            await client_ws.send(command)
            assert await asyncio.wait_for(host_ws.recv(), RECV_TIMEOUT) == command
            await assert_next_is_pong(host_ws)
            await assert_next_is_pong(client_ws)


async def test_kept_frames_are_not_replayed_to_a_v1_socket_but_later_to_a_since_one(
    world: PairedWorld,
) -> None:
    """A v1 socket sees v1: no replay, no seq. What it was handed live is kept all the same."""
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["a", "b"])  # target_offline
        async with socket(world.live, client) as client_ws:  # greeting exactly v1's
            await assert_marker_arrives_next(host_ws, client, client_ws)  # no seq, no replay
            inbox.add(marker_for(client))
            live = event_to(client, "live-on-v1")
            await send(host_ws, live)
            assert await receive(client_ws) == live
            inbox.add(live)
        await offline(world.http, client)
    await replays(world.live, client, 0, inbox)


async def test_v1_commands_to_an_offline_host_still_get_target_offline(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    async with socket(world.live, client) as client_ws:
        await send(client_ws, get_sims_command("r-offline"))
        assert await receive(client_ws) == target_offline(host, "r-offline")


# --- commands -----------------------------------------------------------------------------------
async def sims_over_rest(http: httpx.AsyncClient, host: Device) -> httpx.Response:
    return await http.get("/sims", params={"host_device_id": host.id}, headers=host.owner.headers)


async def test_commands_written_to_a_since_host_carry_seq(world: PairedWorld) -> None:
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, client) as client_ws:
        async with since_socket(world.live, host, 0) as (host_ws, greeting):
            assert greeting == greeting_of(host, 0)
            command = get_sims_command("ws-1")
            await send(client_ws, command)
            assert await next_frame(host_ws) == {**command, "seq": inbox.add(command)}

            reply = await sims_over_rest(world.http, host)
            assert reply.status_code == 200, reply.text
            rest_command = get_sims_command(reply.json()["req_id"])
            assert await next_frame(host_ws) == {**rest_command, "seq": inbox.add(rest_command)}

            no_req_id = {"type": "command", "cmd": "GET_SIMS"}
            await send(client_ws, no_req_id)
            frame = await next_frame(host_ws)
            assert set(frame) == {"type", "cmd", "req_id", "seq"}, frame
            assert frame["seq"] == inbox.add({**no_req_id, "req_id": frame["req_id"]})
            await assert_marker_next(client_ws, host, host_ws, inbox)
        await offline(world.http, host)
    await replays(world.live, host, 0, inbox)


async def test_commands_refused_for_an_offline_host_get_no_seq_and_are_not_replayed(
    world: PairedWorld,
) -> None:
    host, client = world.pair.host, world.pair.client
    inbox = Inbox()
    async with socket(world.live, client) as client_ws:
        async with since_socket(world.live, host, 0) as (host_ws, _):  # seq 1, then drop
            await assert_marker_next(client_ws, host, host_ws, inbox)
        await offline(world.http, host)

        await send(client_ws, get_sims_command("refused"))
        assert await receive(client_ws) == target_offline(host, "refused")
        assert (await sims_over_rest(world.http, host)).status_code == 503

        async with since_socket(world.live, host, 0) as (host_ws, greeting):
            assert greeting == greeting_of(host, 1)  # unchanged: the refused took no seq
            assert await next_frame(host_ws) == inbox.with_seq(1)
            await assert_marker_next(client_ws, host, host_ws, inbox)  # seq 2: not replayed
        async with since_socket(world.live, host, 1) as (host_ws, greeting):
            assert greeting == greeting_of(host, 2)
            assert await next_frame(host_ws) == inbox.with_seq(2)
            await assert_marker_next(client_ws, host, host_ws, inbox)


# --- fan-out ------------------------------------------------------------------------------------
async def test_an_unsolicited_event_is_kept_for_every_paired_client_with_its_own_seq(
    world: PairedWorld, team: Team
) -> None:
    first, second = Inbox(), Inbox()
    async with socket(world.live, team.host) as host_ws:
        async with since_socket(world.live, team.first, 0) as (first_ws, greeting):
            assert greeting == greeting_of(team.first, 0)
            direct = event_to(team.first, "direct")
            await send(host_ws, direct)
            assert await next_frame(first_ws) == {**direct, "seq": first.add(direct)}

            to_all = {"type": "event", "event": "SMS_RECEIVED", "body": "to all"}
            await send(host_ws, to_all)
            assert await next_frame(first_ws) == {**to_all, "seq": first.add(to_all)}
            second.add(to_all)
            await assert_next_is_pong(host_ws)  # one client had it: no target_offline
        await offline(world.http, team.first)

        await replays(world.live, team.second, 0, second)  # seq 1 there, 2 for the first
        await offline(world.http, team.second)

        # nobody online: v1's target_offline, and kept for both all the same
        nobody = {"type": "event", "event": "CALL_STATE", "state": "ringing"}
        await send(host_ws, nobody)
        reply = await receive(host_ws)
        assert reply.get("error") == "target_offline", reply
        first.add(nobody)
        second.add(nobody)
        await replays(world.live, team.first, 2, first)
        await replays(world.live, team.second, 1, second)

        # one client on a v1 socket, the other on a since socket: both live, both kept
        async with (
            socket(world.live, team.second) as second_ws,
            since_socket(world.live, team.first, first.seq) as (first_ws, greeting),
        ):
            assert greeting == greeting_of(team.first, first.seq)
            both = {"type": "event", "event": "SMS_RECEIVED", "body": "to both"}
            await send(host_ws, both)
            assert await next_frame(first_ws) == {**both, "seq": first.add(both)}
            assert await receive(second_ws) == both
            second.add(both)
            await assert_next_is_pong(host_ws)
        await offline(world.http, team.second)
    await replays(world.live, team.second, 0, second)
    await replays(world.live, team.first, 0, first)


# --- pruning ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("events", "since", "kept_from"),
    [
        (8, 0, 4),  # 1..3 pruned: gap
        (8, 2, 4),  # 3 pruned: gap
        (8, 3, 4),  # (3, 8] all kept: no gap
        (8, 7, 4),
        (8, 8, 4),  # nothing after 8: no gap
        (8, 9, 4),
        (5, 0, 1),  # exactly inbox_max: nothing pruned
        (6, 0, 2),  # one over
    ],
)
async def test_at_most_inbox_max_frames_are_kept_and_a_lost_one_is_a_gap(
    settings: Settings, events: int, since: int, kept_from: int
) -> None:
    async with paired_world(settings, inbox_max=5, **UNLIMITED) as world:
        host, client = world.pair.host, world.pair.client
        inbox = Inbox()
        async with socket(world.live, host) as host_ws:
            labels = [f"sms-{n}" for n in range(1, events + 1)]
            await events_to_offline_client(host_ws, client, inbox, labels)
            greeting = await replays(world.live, client, since, inbox, kept_from)
            assert greeting.get("gap", False) == (since < kept_from - 1), greeting

            async with since_socket(world.live, client, inbox.seq) as (client_ws, greeting):
                assert greeting == greeting_of(client, events)
                await assert_marker_next(host_ws, client, client_ws, inbox)  # seq events+1
        await offline(world.http, client)
        await replays(world.live, client, 0, inbox, kept_from=inbox.seq - 4)  # five kept


TTL = 3600


async def test_frames_older_than_the_inbox_ttl_are_no_longer_kept(
    settings: Settings, clock: ManualClock
) -> None:
    async with paired_world(settings, inbox_ttl_seconds=TTL, **UNLIMITED) as world:
        host, client = world.pair.host, world.pair.client
        inbox = Inbox()
        async with socket(world.live, host) as host_ws:
            await events_to_offline_client(host_ws, client, inbox, ["a1", "a2", "a3"])  # at 0
            clock.advance(TTL // 2)
            await events_to_offline_client(host_ws, client, inbox, ["b4", "b5"])  # at TTL/2
            await replays(world.live, client, 0, inbox)  # all young enough: no gap

            clock.advance(TTL // 2 + 1)  # 1..3 are TTL+1 old, 4..5 TTL/2+1
            assert (await replays(world.live, client, 0, inbox, kept_from=4))["gap"] is True
            assert "gap" not in await replays(world.live, client, 3, inbox, kept_from=4)
            await replays(world.live, client, 4, inbox, kept_from=4)

            clock.advance(TTL + 1)  # every one of them too old
            assert (await replays(world.live, client, 0, inbox, kept_from=6))["gap"] is True
            assert (await replays(world.live, client, 4, inbox, kept_from=6))["gap"] is True
            assert "gap" not in await replays(world.live, client, 5, inbox, kept_from=6)

            await events_to_offline_client(host_ws, client, inbox, ["c6", "c7"])  # after it
            await replays(world.live, client, 0, inbox, kept_from=6)
            await replays(world.live, client, 5, inbox, kept_from=6)
            async with since_socket(world.live, client, 7) as (client_ws, greeting):
                assert greeting == greeting_of(client, 7)
                await assert_marker_next(host_ws, client, client_ws, inbox)  # seq 8


# --- bad since ----------------------------------------------------------------------------------
BAD_SINCE = [
    "-1",
    "abc",
    "1.5",
    "",
    "-0",
    "%2B1",  # "+1"
    "+1",  # " 1" once decoded: "+" is a space in a query string
    "%201",  # " 1"
    "1%20",  # "1 "
    "1e3",
    "0x1",
    "1_0",
    "%C2%B2",  # "²": a digit to str.isdigit(), not to int()
    "%D9%A1",  # "١", ARABIC-INDIC DIGIT ONE
    "%EF%BC%91",  # "１", FULLWIDTH DIGIT ONE
]


@pytest.mark.parametrize("kind", ["host", "client"])
@pytest.mark.parametrize("since", BAD_SINCE)
async def test_a_since_that_is_not_a_non_negative_integer_is_refused_with_400(
    world: PairedWorld, kind: str, since: str
) -> None:
    """Refused at the handshake, with nothing else changed: the device's open socket stays its
    live one, and nothing was kept or replayed."""
    host, client = world.pair.host, world.pair.client
    device, peer = (host, client) if kind == "host" else (client, host)
    refused = await handshake(world.live, device, device.owner.token, since=since)
    assert_error(refused.reply, 400)
    assert await is_offline(world.http, device)

    async with socket(world.live, device) as device_ws, socket(world.live, peer) as peer_ws:
        refused = await handshake(world.live, device, device.owner.token, since=since)
        assert_error(refused.reply, 400)
        assert await is_online(world.http, device)
        await assert_marker_arrives_next(peer_ws, device, device_ws)  # not replaced
    await offline(world.http, device)
    await replays(world.live, device, 0, Inbox([marker_for(device)]))


# --- restarts -----------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The environment of a server process on each database: the SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    async for url in fresh_postgres_database():
        yield {"DATABASE_URL": url}


async def restarted(
    servers: Servers, first: ServerProcess, how: signal.Signals, env: dict[str, str]
) -> ServerProcess:
    """Stop `first` with `how` and start another process on the same database."""
    exit_code = await servers.stop(first, how)
    if how == signal.SIGTERM:
        assert exit_code == 0, first.log()
    return await servers.start(**env)


async def test_kept_frames_and_seqs_survive_a_graceful_restart(
    store_env: dict[str, str], servers: Servers
) -> None:
    env = {**store_env, **UNLIMITED_ENV}
    first = await servers.start(**env)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
        host, client = pair.host, pair.client
        inbox = Inbox()
        async with socket(first, host) as host_ws:
            async with since_socket(first, client, 0) as (client_ws, greeting):
                assert greeting == greeting_of(client, 0)
                for n in range(1, 11):
                    live = event_to(client, f"live-{n}")
                    await send(host_ws, live)
                    assert await next_frame(client_ws) == {**live, "seq": inbox.add(live)}
            await offline(http, client)
            await events_to_offline_client(
                host_ws, client, inbox, [f"off-{n}" for n in range(11, 21)]
            )
            second = await restarted(servers, first, signal.SIGTERM, env)

    await replays(second, client, 10, inbox)
    async with socket(second, host) as host_ws:
        async with since_socket(second, client, inbox.seq) as (client_ws, greeting):
            assert greeting == greeting_of(client, 20)
            await assert_marker_next(host_ws, client, client_ws, inbox)  # 21: none reused
    await replays(second, client, 0, inbox)


async def test_seqs_never_go_back_after_a_crash(
    store_env: dict[str, str], servers: Servers
) -> None:
    """kill -9 may lose frames not yet written (then the greeting says `gap`), but never a seq:
    what comes next has a seq above every seq the client saw, and a kept frame is the one that
    had its seq."""
    env = {**store_env, **UNLIMITED_ENV}
    first = await servers.start(**env)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
    host, client = pair.host, pair.client
    inbox = Inbox()
    async with socket(first, host) as host_ws:
        async with since_socket(first, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 0)
            for n in range(1, 11):
                live = event_to(client, f"seen-{n}")
                await send(host_ws, live)
                assert await next_frame(client_ws) == {**live, "seq": inbox.add(live)}
            seen = inbox.seq
            unseen = event_to(client, "unseen")  # seq 11, perhaps lost with the process
            await send(host_ws, unseen)
            inbox.add(unseen)
            second = await restarted(servers, first, signal.SIGKILL, env)
            await asyncio.wait_for(client_ws.wait_closed(), GRACEFUL_SECONDS)

    for since in (seen, 0):
        async with since_socket(second, client, since) as (client_ws, greeting):
            latest = greeting.get("seq", -1)
            assert greeting == greeting_of(client, latest, greeting.get("gap", False)), greeting
            assert latest >= seen, greeting  # a seq the client saw is never handed out again
            async with socket(second, host) as host_ws:
                after = event_to(client, f"after-{since}")
                await send(host_ws, after)
                replayed = []
                for _ in range(latest - since + 1):  # the kept frames, then `after`
                    frame = await next_frame(client_ws)
                    if frame.get("body") == after["body"]:
                        break
                    replayed.append(frame)
                else:
                    raise AssertionError(f"no {after} after {replayed}")
            assert frame == {**after, "seq": latest + 1}, (greeting, replayed)
            seqs = [each["seq"] for each in replayed]
            assert seqs == sorted(set(seqs)) and all(since < seq <= latest for seq in seqs)
            for each in replayed:  # each kept frame is the one that had its seq
                assert each == inbox.with_seq(each["seq"]), each
            if seqs != list(range(since + 1, latest + 1)):
                assert greeting.get("gap") is True, (greeting, seqs)
            # for the next round: seqs up to `latest` name frames lost or never sent, then `after`
            lost = [{"lost": seq} for seq in range(inbox.seq + 1, latest + 1)]
            inbox.frames = inbox.frames[:latest] + lost
            inbox.add(after)


async def test_frames_written_before_a_crash_are_still_kept_after_it(
    store_env: dict[str, str], servers: Servers
) -> None:
    """What reached the database before kill -9 is kept (within TTL and count) and replayed;
    the seqs the crash skipped may be reported as a gap, the frames that survived may not be
    dropped."""
    env = {**store_env, **UNLIMITED_ENV}
    first = await servers.start(**env)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        pair = await make_pair(http, await make_account(http, "alice"))
        host, client = pair.host, pair.client
        inbox = Inbox()
        async with socket(first, host) as host_ws:
            await events_to_offline_client(host_ws, client, inbox, ["k1", "k2", "k3"])

            async def written() -> bool:
                return len(await history(http, client.owner, client)) == inbox.seq

            assert await eventually(written), await history(http, client.owner, client)
            second = await restarted(servers, first, signal.SIGKILL, env)

    async with since_socket(second, client, 0) as (client_ws, greeting):
        latest = greeting.get("seq", -1)
        assert latest >= inbox.seq, greeting
        assert greeting == greeting_of(client, latest, greeting.get("gap", False)), greeting
        replayed = await receive_up_to(client_ws, inbox.seq)
        assert replayed == inbox.after(0), greeting
