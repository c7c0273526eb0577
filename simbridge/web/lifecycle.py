"""Sanic's listeners: start-up and shutdown call the composition root (`simbridge.runtime`);
the access log."""

from __future__ import annotations

import logging
import time

from sanic import Request
from sanic.response import BaseHTTPResponse

from simbridge.config import ConfigError, too_many_workers
from simbridge.runtime import Runtime
from simbridge.web.context import SimBridgeApp

access_log = logging.getLogger("simbridge.access")


def setup_lifecycle(app: SimBridgeApp) -> None:
    app.main_process_start(_refuse_many_workers)
    app.before_server_start(_start)
    app.before_server_stop(_close_sockets)
    app.after_server_stop(_stop)
    if app.ctx.settings.access_log:
        app.on_request(_start_timer)
        app.on_response(_log_access)


async def _refuse_many_workers(app: SimBridgeApp) -> None:
    """Also for `sanic ... --workers N`, which bypasses the settings' own check."""
    if problem := too_many_workers(app.ctx.settings.broker, app.state.workers):
        raise ConfigError(problem)


async def _start(app: SimBridgeApp) -> None:
    app.ctx.runtime = await Runtime.start(app.ctx.settings)


async def _close_sockets(app: SimBridgeApp) -> None:
    """Runs before Sanic cancels socket handlers (which would close them with 1000, not 1001)."""
    await app.ctx.runtime.close_sockets()


async def _stop(app: SimBridgeApp) -> None:
    await app.ctx.runtime.stop()


async def _start_timer(request: Request) -> None:
    request.ctx.started = time.perf_counter()


async def _log_access(request: Request, response: BaseHTTPResponse) -> None:
    """Method, path (never the query string: it may carry a token) and status."""
    started = getattr(request.ctx, "started", None)  # unset if refused by earlier middleware
    elapsed = f"{(time.perf_counter() - started) * 1000:.1f}ms" if started else "-"
    access_log.info("%s %s %s %s", request.method, request.path, response.status, elapsed)
