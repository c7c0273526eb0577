"""Live sockets: the local `Hub` of each process, and the `Broker` for what crosses processes."""

from __future__ import annotations

from simbridge.config import Settings
from simbridge.hub.base import Connection
from simbridge.hub.broker import Broker
from simbridge.hub.local import Hub
from simbridge.hub.memory import MemoryBroker
from simbridge.hub.session import Session

__all__ = ["Broker", "Connection", "Hub", "MemoryBroker", "Session", "make_broker"]


def make_broker(settings: Settings) -> Broker:
    """The broker that `SIMBRIDGE_BROKER` names (only `memory` so far)."""
    return MemoryBroker(settings.clock, settings.request_correlation_seconds)
