"""Live sockets: the local `Hub` of each process, and the `Broker` for what crosses processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from simbridge.config import Settings
from simbridge.hub.base import Connection
from simbridge.hub.broker import Broker
from simbridge.hub.local import Hub
from simbridge.hub.memory import MemoryBroker
from simbridge.hub.redis import RedisBroker
from simbridge.hub.session import Session

__all__ = ["Broker", "Connection", "Hub", "MemoryBroker", "Session", "make_broker"]


def make_broker(settings: Settings, on_resync: Callable[[], Awaitable[None]]) -> Broker:
    """The broker that `SIMBRIDGE_BROKER` names. `on_resync` runs when a broker that may have
    lost messages between processes (Redis) is whole again: caches must be rebuilt."""
    if settings.broker == "redis":
        return RedisBroker(
            settings.redis_url,
            prefix=settings.redis_prefix,
            heartbeat_seconds=settings.heartbeat_seconds,
            node_ttl_seconds=settings.node_ttl_seconds,
            max_sockets_per_user=settings.max_sockets_per_user,
            on_resync=on_resync,
        )
    return MemoryBroker()
