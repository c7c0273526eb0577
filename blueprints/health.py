"""Health for load balancers: `GET /health`, no authentication (contract §9)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json
from sanic_ext.extensions.openapi import openapi
from sanic_ext.extensions.openapi.definitions import Component

from simbridge.schemas import HealthOut
from simbridge.services.health import check_health
from simbridge.web.context import runtime_of
from simbridge.web.docs import documented

bp = Blueprint("health")


@bp.get("/health")
@openapi.response(503, {"application/json": Component(HealthOut)}, "A check failed")
@documented("get_health", tag="operations", ok=HealthOut, errors=(), secured=False)
async def health(request: Request) -> HTTPResponse:
    """Whether this server's database and broker answer.

    200 when they do; 503, with the same body, naming the check that failed.
    """
    healthy, checks = await check_health(runtime_of(request).broker)
    status = "ok" if healthy else "unavailable"
    return json({"status": status, "checks": checks}, status=200 if healthy else 503)
