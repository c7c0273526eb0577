"""Every error leaves as JSON `{"detail": ...}` (contract §1): never HTML, never a traceback."""

from __future__ import annotations

import logging

from sanic import Request
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse, json

from simbridge.errors import SimBridgeError
from simbridge.web.context import SimBridgeApp

log = logging.getLogger("simbridge.web")

_SANIC_DETAILS = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timed out",
    413: "Request body is larger than the configured limit",
}


class RedactingErrorHandler(ErrorHandler):
    """Sanic's handler logs the full URL of a failed request, query string (`?token=`)
    included; this one logs the method and path only."""

    @staticmethod
    def log(request: Request, exception: Exception) -> None:
        quiet = getattr(exception, "quiet", False)
        if quiet is False or getattr(request.app.config, "NOISY_EXCEPTIONS", False):
            log.error(
                "error while handling %s %s", request.method, request.path, exc_info=exception
            )


def register_error_handlers(app: SimBridgeApp) -> None:
    app.error_handler.add(SimBridgeError, _domain_error)
    app.error_handler.add(SanicException, _framework_error)
    app.error_handler.add(Exception, _unexpected_error)


def _domain_error(request: Request, exc: Exception) -> HTTPResponse:
    assert isinstance(exc, SimBridgeError)
    return json(exc.body(), status=exc.status, headers=exc.headers())


def _framework_error(request: Request, exc: Exception) -> HTTPResponse:
    assert isinstance(exc, SanicException)
    status = exc.status_code
    detail = _SANIC_DETAILS.get(status) or (str(exc) if status < 500 else "Internal server error")
    return json({"detail": detail}, status=status, headers=exc.headers)


def _unexpected_error(request: Request, exc: Exception) -> HTTPResponse:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return json({"detail": "Internal server error"}, status=500)
