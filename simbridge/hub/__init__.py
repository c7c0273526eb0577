"""The connection registry and router: which device has a live socket, and where."""

from __future__ import annotations

from simbridge.config import Settings
from simbridge.hub.base import Broker, Connection
from simbridge.hub.memory import MemoryBroker

__all__ = ["Broker", "Connection", "MemoryBroker", "make_broker"]


def make_broker(settings: Settings) -> Broker:
    """The broker that `SIMBRIDGE_BROKER` names (only `memory` so far)."""
    return MemoryBroker(send_timeout=settings.send_timeout_seconds)
