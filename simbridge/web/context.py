"""What the app keeps for its lifetime, typed, so handlers need no guessing about `app.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from sanic import Request, Sanic
from sanic.config import Config

from simbridge.config import Settings

if TYPE_CHECKING:
    from simbridge.runtime import Runtime


@dataclass
class AppContext:
    settings: Settings
    runtime: Runtime = field(init=False)  # set by the start-up listener


SimBridgeApp = Sanic[Config, AppContext]


def app_context(request: Request) -> AppContext:
    """The app's context; Sanic types it as a `SimpleNamespace`, `create_app` made it this."""
    return cast(AppContext, request.app.ctx)


def runtime_of(request: Request) -> Runtime:
    """The services of this process."""
    return app_context(request).runtime
