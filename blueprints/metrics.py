"""Prometheus metrics: `GET /metrics` (contract §9, docs/metrics.md)."""

from __future__ import annotations

import hmac

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw
from sanic_ext.extensions.openapi import openapi
from sanic_ext.extensions.openapi.definitions import Component, Response

from simbridge.errors import InvalidCredentials
from simbridge.metrics import CONTENT_TYPE
from simbridge.schemas import ErrorOut
from simbridge.web.auth import bearer_token
from simbridge.web.context import app_context

bp = Blueprint("metrics")


@bp.get("/metrics")
@openapi.definition(
    operation="get_metrics",
    tag="operations",
    summary="Every metric of this server, in the Prometheus text format",
    description=(
        "The Prometheus text format (docs/metrics.md lists every metric). When "
        "`SIMBRIDGE_METRICS_TOKEN` is set, `Authorization: Bearer <that token>` is required."
    ),
    response=[
        Response({"text/plain": str}, status=200, description="Metrics, Prometheus text format"),
        Response(
            {"application/json": Component(ErrorOut)},
            status=401,
            description="SIMBRIDGE_METRICS_TOKEN is set and the bearer token is not it",
        ),
    ],
    secured={"metrics_token": []},
)
@openapi.secured({})  # or none at all: the token is needed only when one is configured
async def metrics(request: Request) -> HTTPResponse:
    """Every metric of this server (all its workers), for Prometheus to scrape."""
    ctx = app_context(request)
    expected = ctx.settings.metrics_token
    if expected:
        given = bearer_token(request) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise InvalidCredentials("Missing or wrong metrics token")
    return raw(ctx.runtime.metrics.exposition(), content_type=CONTENT_TYPE)
