"""What the app keeps for its lifetime, typed, so handlers need no guessing about `app.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from sanic import Request, Sanic
from sanic.config import Config

from simbridge.config import Settings

if TYPE_CHECKING:
    from simbridge.services.guard import Guard
    from simbridge.services.identities import Identities
    from simbridge.services.relay import Relay
    from simbridge.services.retention import RetentionTask


@dataclass
class AppContext:
    settings: Settings
    relay: Relay = field(init=False)
    guard: Guard = field(init=False)
    identities: Identities = field(init=False)
    retention: RetentionTask = field(init=False)


SimBridgeApp = Sanic[Config, AppContext]


def app_context(request: Request) -> AppContext:
    """The app's context; Sanic types it as a `SimpleNamespace`, `create_app` made it this."""
    return cast(AppContext, request.app.ctx)
