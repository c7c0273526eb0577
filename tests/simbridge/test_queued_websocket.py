"""The socket's own receive path (`QueuedWebsocket`): messages are whole, in order, never lost."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from websockets.exceptions import ConnectionClosed

from simbridge.config import Settings
from simbridge.web.queued_websocket import INBOX_HIGH
from tests.helpers import RECV_TIMEOUT, LiveServer, Pair, receive, socket

FLOOD = INBOX_HIGH * 8  # far more than the inbox holds before the socket stops being read


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
