"""Start-up and shutdown: database, broker, log writer and relay, in that order and back."""

from __future__ import annotations

import logging
import sys
import time

from sanic import Request
from sanic.response import BaseHTTPResponse

from simbridge.config import ConfigError, too_many_workers
from simbridge.db import apply_migrations, start_orm, stop_orm
from simbridge.hub import make_broker
from simbridge.limits import MemoryLimiter
from simbridge.services.directory import PairingDirectory
from simbridge.services.guard import Guard
from simbridge.services.identities import Identities
from simbridge.services.log_store import OrmLogStore, SqliteLogStore
from simbridge.services.message_log import MessageLogWriter
from simbridge.services.relay import Relay
from simbridge.services.retention import RetentionTask
from simbridge.web.context import AppContext, SimBridgeApp

# Worker threads (the SQLite log writer, bcrypt) need the GIL back after each call into C; with
# Python's default of 5 ms a busy event loop made them wait that long every time, and the log
# writer, not the relay, set the pace (throughput 0.55-0.59 of the bare relay, 0.62-0.70 at 1 ms).
GIL_SWITCH_SECONDS = 0.001

log = logging.getLogger("simbridge")
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
    ctx: AppContext = app.ctx
    settings = ctx.settings
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    applied = await apply_migrations(settings)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    await start_orm(settings)
    broker = make_broker(settings)
    await broker.start()
    writer = MessageLogWriter(
        store=SqliteLogStore(settings.sqlite_path) if settings.is_sqlite else OrmLogStore(),
        clock=settings.clock,
        batch_size=settings.log_batch_size,
        flush_seconds=settings.log_flush_seconds,
        queue_size=settings.log_queue_size,
    )
    writer.start()
    ctx.relay = Relay(broker=broker, directory=PairingDirectory(), writer=writer, settings=settings)
    ctx.guard = Guard(MemoryLimiter(settings.clock), settings)
    ctx.identities = Identities(settings)
    ctx.retention = RetentionTask(
        clock=settings.clock,
        days=settings.retention_days,
        interval_seconds=settings.retention_interval_seconds,
        batch_size=settings.retention_batch_size,
    )
    ctx.retention.start()


async def _close_sockets(app: SimBridgeApp) -> None:
    """Runs before Sanic cancels socket handlers (which would close them with 1000, not 1001)."""
    ctx: AppContext = app.ctx
    await ctx.relay.shutdown(timeout=ctx.settings.graceful_shutdown_seconds)


async def _stop(app: SimBridgeApp) -> None:
    ctx: AppContext = app.ctx
    await ctx.retention.stop()
    await ctx.relay.writer.stop()
    await stop_orm()


async def _start_timer(request: Request) -> None:
    request.ctx.started = time.perf_counter()


async def _log_access(request: Request, response: BaseHTTPResponse) -> None:
    """Method, path (never the query string: it may carry a token) and status."""
    started = getattr(request.ctx, "started", None)  # unset if refused by earlier middleware
    elapsed = f"{(time.perf_counter() - started) * 1000:.1f}ms" if started else "-"
    access_log.info("%s %s %s %s", request.method, request.path, response.status, elapsed)
