"""The socket's own receive path (`QueuedWebsocket`): messages are whole, in order, never lost."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest
import uvloop
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from simbridge.config import Settings
from simbridge.protocol import CLOSE_REPLACED, CLOSE_REVOKED
from simbridge.web.queued_websocket import INBOX_HIGH, UNSENT_HIGH
from tests.helpers import (
    RECV_TIMEOUT,
    Account,
    LiveServer,
    Pair,
    assert_closed_with,
    assert_rest_marker_arrives_next,
    make_account,
    make_device,
    pair_devices,
    raw_upgrade,
    receive,
    socket,
)

FLOOD = INBOX_HIGH * 8  # far more than the inbox holds before the socket stops being read


# pytest-asyncio 1.x deprecates overriding `event_loop_policy` (its replacement hook would
# parametrize every test of the suite); `runs_on_the_loop_asked_for` fails if it stops working.
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy" fixture')


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on asyncio's loop (the suite's) and on uvloop (what `simbridge serve` runs):
    the two order reads, callbacks and writes differently within a turn of the loop."""
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture(autouse=True)
async def runs_on_the_loop_asked_for(event_loop_policy: asyncio.AbstractEventLoopPolicy) -> None:
    on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert on_uvloop == isinstance(event_loop_policy, uvloop.EventLoopPolicy)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Room in the rate limit for a flood: this is about reading, not about policy."""
    return replace(settings, ws_message_burst=FLOOD * 2)


async def test_fragmented_message_is_handled_as_one(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.client) as client, socket(server, pair.host) as host:
        await client.send(['{"type":"command","cmd":"GET', '_SIMS","req_id":"frag', 'mented"}'])
        assert await receive(host) == {"type": "command", "cmd": "GET_SIMS", "req_id": "fragmented"}


async def test_binary_message_is_handled_like_text(server: LiveServer, pair: Pair) -> None:
    async with socket(server, pair.host) as host:
        await host.send(b'{"type":"ping"}')
        assert await receive(host) == {"type": "pong"}


async def test_flood_is_answered_whole_and_in_order(server: LiveServer, pair: Pair) -> None:
    """Frames sent faster than they are handled wait (the socket stops being read); none is
    dropped or reordered, and another device is served meanwhile."""
    async with socket(server, pair.client) as client, socket(server, pair.host) as host:
        for i in range(FLOOD):
            await client.send(json.dumps({"type": "command", "cmd": "GET_SIMS", "req_id": str(i)}))
        await host.send('{"type":"ping"}')
        frames = [await receive(host) for _ in range(FLOOD + 1)]
        assert {"type": "pong"} in frames
        seen = [frame["req_id"] for frame in frames if frame["type"] == "command"]
        assert seen == [str(i) for i in range(FLOOD)]


async def test_frames_read_before_a_close_are_all_relayed(server: LiveServer, pair: Pair) -> None:
    """The client sends and closes at once: the close is answered only after every frame."""
    async with socket(server, pair.host) as host:
        async with socket(server, pair.client) as client:
            for i in range(FLOOD):
                await client.send(
                    json.dumps({"type": "command", "cmd": "GET_SIMS", "req_id": str(i)})
                )
        received = [(await receive(host))["req_id"] for _ in range(FLOOD)]
    assert received == [str(i) for i in range(FLOOD)]


async def test_invalid_utf8_text_closes_with_1007_and_others_are_served(
    server: LiveServer, pair: Pair
) -> None:
    async with socket(server, pair.host) as host:
        async with socket(server, pair.client) as client:
            client.protocol.send_text(b'{"type":"ping","x":"\xff\xfe"}')  # no valid UTF-8
            client.send_data()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), RECV_TIMEOUT)
            assert client.close_code == 1007
        await host.send('{"type":"ping"}')
        assert await receive(host) == {"type": "pong"}


async def test_replies_to_frames_sent_just_before_a_close_do_not_cost_the_rest(
    server: LiveServer, pair: Pair
) -> None:
    """A `ping` (whose pong can no longer be sent) ahead of commands in the last burst."""
    async with socket(server, pair.host) as host:
        async with socket(server, pair.client) as client:
            await client.send('{"type":"ping"}')
            for i in range(5):
                await client.send(
                    json.dumps({"type": "command", "cmd": "GET_SIMS", "req_id": str(i)})
                )
        received = [(await receive(host))["req_id"] for _ in range(5)]
    assert received == [str(i) for i in range(5)]


class RawSocket:
    """A WebSocket client that does only what the test says: it never answers a close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: LiveServer, path: str) -> RawSocket:
        reader, writer, head = await raw_upgrade(server, path)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        self.writer.write(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))
        await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        """The opcode and payload of the next frame from the server (never masked)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), RECV_TIMEOUT)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        return head[0] & 0x0F, await self.reader.readexactly(length)


class CountingTransport:
    """A socket's real transport, with a count of the `write` calls made on it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def command_frames(req_ids: list[str]) -> bytes:
    """Masked client frames of `GET_SIMS` commands, back to back: one TCP write for them all."""
    return b"".join(
        Frame(
            Opcode.TEXT,
            json.dumps({"type": "command", "cmd": "GET_SIMS", "req_id": req_id}).encode(),
        ).serialize(mask=True)
        for req_id in req_ids
    )


async def test_frames_relayed_in_one_turn_of_the_loop_leave_in_one_write(
    server: LiveServer, pair: Pair, alice: Account
) -> None:
    """Commands read at once are relayed in one turn of the event loop: the host's socket
    writes them in order, `UNSENT_HIGH` to a system call (instead of one each), so that the
    transport still sees a burst and can push back."""
    async with socket(server, pair.host) as host:
        io_proto = server.runtime.hub.session_of(pair.host.id).conn.io_proto  # type: ignore[attr-defined]
        counting = CountingTransport(io_proto.transport)
        io_proto.transport = counting
        raw = await RawSocket.open(server, f"/ws/client/{pair.client.id}?token={alice.token}")
        assert (await raw.next_frame())[0] == Opcode.TEXT  # the greeting
        raw.writer.write(command_frames(["warm-up"]))  # the pairing is read from the database
        assert (await receive(host))["req_id"] == "warm-up"
        counting.writes = 0

        burst = [str(i) for i in range(3 * UNSENT_HIGH)]
        raw.writer.write(command_frames(burst))
        received = [(await receive(host))["req_id"] for _ in burst]

        assert received == burst
        assert counting.writes == 3
        raw.writer.close()


async def test_frames_waiting_for_the_end_of_the_turn_go_before_any_other_write(
    server: LiveServer, pair: Pair
) -> None:
    """A frame handed over with `send_now` waits for the end of the loop's turn; a frame
    written through Sanic's `send` meanwhile, and the close frame of an immediate close, follow
    it: nothing is reordered, nothing is lost."""
    async with socket(server, pair.host) as host:
        conn = server.runtime.hub.session_of(pair.host.id).conn
        assert conn.send_now('{"n":1}')
        await conn.send('{"n":2}')  # Sanic's own write path
        assert conn.send_now('{"n":3}')
        conn.abort(CLOSE_REPLACED, "replaced")  # Sanic's fail_connection writes its close

        assert [await receive(host) for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
        await assert_closed_with(host, CLOSE_REPLACED)


async def test_frames_taken_before_the_peer_half_closes_still_reach_it(
    server: LiveServer, pair: Pair, alice: Account
) -> None:
    """The host sends its FIN (it still reads) while frames are handed to its socket in every
    turn of the loop: each frame `send_now` took reaches it before the connection ends, as
    when each was written at once (the transport closes itself on the FIN)."""
    raw = await RawSocket.open(server, f"/ws/host/{pair.host.id}?token={alice.token}")
    assert (await raw.next_frame())[0] == Opcode.TEXT  # the greeting
    conn = server.runtime.hub.session_of(pair.host.id).conn
    taken = 0

    async def hand_over() -> None:
        nonlocal taken
        for _ in range(10_000):  # until the socket is no longer open
            if conn.send_now('{"n":1}'):
                taken += 1
            elif conn.ws_proto.state is not State.OPEN:
                return
            await asyncio.sleep(0)

    handing_over = asyncio.create_task(hand_over())
    await asyncio.sleep(0.02)
    raw.writer.write_eof()
    await asyncio.wait_for(handing_over, RECV_TIMEOUT)
    received = await asyncio.wait_for(raw.reader.read(), RECV_TIMEOUT)  # up to the server's FIN

    frames = received.count(b'\x81\x07{"n":1}')
    assert taken > 0
    assert frames == taken
    raw.writer.close()


async def test_a_peer_that_ignores_our_close_is_not_heard_and_is_cut_off(
    settings: Settings,
) -> None:
    """Its token revoked, a client keeps sending instead of answering the close (4001): none
    of it reaches the host, and its connection is cut after `ws_close_timeout`."""
    async with (
        LiveServer.running(replace(settings, ws_close_timeout=0.3)) as live,
        httpx.AsyncClient(base_url=live.url) as http,
    ):
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        client = await make_device(http, alice, "client")
        await pair_devices(http, alice, host, client)
        device_token = (await http.post(f"/devices/{host.id}/token", headers=alice.headers)).json()[
            "device_token"
        ]
        async with socket(live, host, device_token) as host_ws:  # survives logout-all
            raw = await RawSocket.open(live, f"/ws/client/{client.id}?token={alice.token}")
            assert (await raw.next_frame())[0] == Opcode.TEXT  # the greeting
            logout = await http.post("/auth/logout-all", headers=alice.headers)
            assert logout.status_code == 200
            opcode, payload = await raw.next_frame()
            assert (opcode, int.from_bytes(payload[:2], "big")) == (Opcode.CLOSE, CLOSE_REVOKED)

            await raw.send_text('{"type":"command","cmd":"GET_SIMS","req_id":"after-close"}')

            assert await asyncio.wait_for(raw.reader.read(), RECV_TIMEOUT) == b""  # cut off
            raw.writer.close()
            # Once it is cut off, anything of it the server relayed is on its way to the host
            # already: the host's next frame must be its owner's marker, not the command.
            fresh_token = logout.json()["token"]
            await assert_rest_marker_arrives_next(http, host, host_ws, fresh_token)
