"""The Sanic side of the metrics (simbridge/metrics.py): HTTP requests counted by route
pattern, and, under several workers, the directory their snapshots are shared in."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from sanic import Request
from sanic.response import BaseHTTPResponse

from simbridge.metrics import SHARE_ENV, UNMATCHED, make_share_dir
from simbridge.web.context import SimBridgeApp, app_context

log = logging.getLogger("simbridge.metrics")


def setup_metrics(app: SimBridgeApp) -> None:
    app.on_response(_count_request)
    app.main_process_start(_make_share)
    app.main_process_stop(_remove_share)


def route_label(request: Request) -> str:
    """The route's pattern (`/devices/<device_id:int>`), never the concrete path; `unmatched`
    when no route matched (a 404 for an unknown path, a 405)."""
    route = request.route
    if route is None:
        return UNMATCHED
    return "/" + route.path.lstrip("/")


async def _count_request(request: Request, response: BaseHTTPResponse) -> None:
    runtime = getattr(app_context(request), "runtime", None)
    if runtime is not None:  # set once the server started
        runtime.metrics.counts.http_request(route_label(request), response.status)


async def _make_share(app: SimBridgeApp) -> None:
    """In the main process, before the workers start (they inherit the environment): a
    private directory for their snapshots, only when there are several of them."""
    if app.state.workers > 1:
        try:
            os.environ[SHARE_ENV] = str(make_share_dir())
        except OSError as exc:
            log.warning(
                "no directory for the workers' metrics (%s): each scrape shows the worker that "
                "answers it only",
                exc.strerror,
            )


async def _remove_share(app: SimBridgeApp) -> None:
    directory = os.environ.pop(SHARE_ENV, None)
    if directory:
        shutil.rmtree(Path(directory), ignore_errors=True)
