"""`GET /health` (contract §9): what a load balancer asks before sending traffic."""

from __future__ import annotations

import httpx

from simbridge.db import stop_orm
from tests.helpers import LiveServer


async def test_health_is_ok_without_a_token(http: httpx.AsyncClient) -> None:
    reply = await http.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


async def test_health_is_503_naming_the_database_when_it_does_not_answer(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    await stop_orm()  # the server's database connections are gone, as when the server is down
    reply = await http.get("/health")
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("unreachable")
    assert server.app.ctx.settings.db_path not in reply.text  # no connection string
