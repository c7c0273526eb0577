from __future__ import annotations

import httpx

from tests.helpers import LiveServer, Pair, receive, send, socket


async def test_get_sims_round_trip(server: LiveServer, http: httpx.AsyncClient, pair: Pair) -> None:
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        await send(client, {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"})
        assert await receive(host) == {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"}
        await send(host, {"type": "event", "event": "SIM_INFO", "sims": [], "req_id": "r1"})
        assert await receive(client) == {
            "type": "event",
            "event": "SIM_INFO",
            "sims": [],
            "req_id": "r1",
        }
