"""The app factory: `create_app(settings)` builds a SimBridge server and connects nothing yet;
databases and sockets open in the start-up listeners."""

from __future__ import annotations

import logging
from argparse import Namespace
from collections.abc import Sequence
from importlib import import_module

import orjson
from sanic import Sanic
from sanic_ext.extensions.openapi import openapi

from simbridge import __version__
from simbridge.config import Settings, load_settings, validate
from simbridge.web import docs_assets, sanic_compat
from simbridge.web.context import AppContext, SimBridgeApp
from simbridge.web.docs import TAGS
from simbridge.web.errors import RedactingErrorHandler, register_error_handlers
from simbridge.web.headers import add_security_headers
from simbridge.web.lifecycle import setup_lifecycle
from simbridge.web.metrics import setup_metrics

DEFAULT_BLUEPRINTS = (
    "blueprints.auth",
    "blueprints.devices",
    "blueprints.pairing",
    "blueprints.commands",
    "blueprints.history",
    "blueprints.webhooks",
    "blueprints.websockets",
    "blueprints.health",
    "blueprints.metrics",
    "blueprints.console",
)


def create_app(
    settings: Settings | Namespace | None = None,
    *,
    blueprints: Sequence[str] = DEFAULT_BLUEPRINTS,
    name: str = "simbridge",
) -> SimBridgeApp:
    """Build the app; `settings` default to the environment, validated here.

    Sanic's own CLI (`sanic simbridge.app:create_app --factory`) passes its parsed command line,
    which holds no settings: the environment's are used then, as with `simbridge serve`.
    """
    settings = validate(settings if isinstance(settings, Settings) else load_settings())
    logging.getLogger("simbridge").setLevel(settings.log_level.upper())
    app: SimBridgeApp = Sanic(
        name,
        ctx=AppContext(settings=settings),
        dumps=_dumps,
        error_handler=RedactingErrorHandler(),
    )
    _configure_server(app, settings)
    _describe_api(app)
    register_error_handlers(app)
    app.on_response(add_security_headers)
    setup_metrics(app)  # requests counted by route pattern and status
    for module_name in blueprints:
        app.blueprint(import_module(module_name).bp)
    _leave_sockets_out_of_openapi(app)
    sanic_compat.batch_signal_finalization(app)
    setup_lifecycle(app)  # after the blueprints: its stop listener must run before Sanic's
    return app


def _dumps(value: object) -> bytes:
    """orjson for every JSON reply (fast, and embeds stored payloads via `orjson.Fragment`);
    the OpenAPI document has integer keys (status codes)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _configure_server(app: SimBridgeApp, settings: Settings) -> None:
    app.config.update(
        {
            "FALLBACK_ERROR_FORMAT": "json",
            "ACCESS_LOG": False,  # Sanic's would log `?token=`; see `settings.access_log`
            "REQUEST_MAX_SIZE": settings.max_body_bytes,
            "WEBSOCKET_MAX_SIZE": settings.max_message_bytes,
            "WEBSOCKET_PING_INTERVAL": settings.ws_ping_interval,
            "WEBSOCKET_PING_TIMEOUT": settings.ws_ping_timeout,
            "GRACEFUL_SHUTDOWN_TIMEOUT": settings.graceful_shutdown_seconds,
            "CORS_ORIGINS": settings.cors_origins,  # empty: no cross-origin REST at all
        }
    )


def _describe_api(app: SimBridgeApp) -> None:
    """The OpenAPI document at /docs/openapi.json and Swagger UI at /docs, its files served by
    this server (`simbridge.web.docs_assets`): nothing on the page comes from elsewhere."""
    app.extend(
        config={
            "oas_ui_default": "swagger",
            "oas_ui_swagger_cdn_url": docs_assets.ASSETS_URL,
            "oas_ui_swagger_version": docs_assets.SWAGGER_UI_VERSION,
            "oas_ui_swagger_html_title": "SimBridge API",
            # sanic-ext's Redoc page loads its script from a CDN and its fonts from Google; the
            # PyPI package that ships Redoc's bundle (drf-spectacular-sidecar) needs Django.
            "oas_ui_redoc": False,
            "oas_url_prefix": "/docs",
            "oas_uri_to_json": "/openapi.json",
            "swagger_ui_configuration": {
                "apisSorter": "alpha",
                "operationsSorter": "alpha",
                "docExpansion": "list",
                "displayOperationId": True,  # the function names of generated clients
                "validatorUrl": None,  # no badge from validator.swagger.io
            },
            "health": False,
        }
    )
    docs_assets.serve_swagger_ui(app)
    app.ext.openapi.describe(
        "SimBridge",
        version=__version__,
        description=(
            "Relay between a host phone (holds the SIM cards) and its paired clients. "
            "The WebSocket protocol (`/ws/host/{id}`, `/ws/client/{id}`) is described in "
            "docs/websocket-protocol.md."
        ),
    )
    for tag, description in TAGS.items():
        app.ext.openapi.tag(tag, description)
    app.ext.openapi.add_security_scheme("token", "http", scheme="bearer", bearer_format="JWT")
    # GET /metrics, when SIMBRIDGE_METRICS_TOKEN is set
    app.ext.openapi.add_security_scheme("metrics_token", "http", scheme="bearer")


def _leave_sockets_out_of_openapi(app: SimBridgeApp) -> None:
    """OpenAPI 3.0 cannot describe a WebSocket; docs/websocket-protocol.md does."""
    for route in app.router.routes:
        if sanic_compat.is_websocket_route(route):
            openapi.exclude()(route.handler)
