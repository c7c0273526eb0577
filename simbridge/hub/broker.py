"""The `Broker`: what crosses processes. The local `Hub` owns this process's sockets; the broker
knows which devices are live anywhere, hands a frame to a device held by another process
(with, for a command, who asked it: the host's process remembers that), and carries control
messages to every process.

`MemoryBroker` serves one process; a broker for several (Redis) implements the same interface,
so nothing above it changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from simbridge.hub.control import Control
from simbridge.hub.local import Hub
from simbridge.hub.open_requests import Asked

ControlHandler = Callable[[Control], Awaitable[None]]


class BrokerUnavailable(Exception):
    """The broker cannot reach the other processes now (Redis is away), so what needs them
    cannot be done; what stays within this process still can."""


class Broker(Protocol):
    async def start(self, hub: Hub, on_control: ControlHandler) -> None:
        """Serve this process's `hub`; every control message (from any process) goes to
        `on_control`. Called once per process, before serving."""

    async def stop(self) -> None:
        """Release what this process holds."""

    async def claim(self, device_id: int) -> None:
        """The device's live socket is now in this process (it was just attached to the hub);
        a socket of the device held by another process is closed there with 4000."""

    async def has_room(self, user_id: int, device_id: int) -> bool:
        """Whether the user may open one more socket, counting every process (replacing a
        device's own socket does not count)."""

    async def release(self, device_id: int) -> None:
        """The device's socket here is gone (it was just detached from the hub)."""

    async def deliver(self, device_id: int, frame: str, asked: Asked | None = None) -> bool:
        """Hand `frame` to the device's socket in another process; False if it has none. A
        command's `asked` is remembered there (`Hub.remember_request`) before it is sent."""

    async def online(self, device_ids: Iterable[int]) -> set[int]:
        """Those of `device_ids` that have a live socket in any process."""

    async def broadcast(self, control: Control) -> None:
        """Deliver `control` to every process, this one included, once each."""

    async def check(self) -> bool:
        """Whether the broker can route between processes now (for `GET /health`)."""

    def available(self) -> bool:
        """Whether the other processes are reachable, as far as known without asking (a new
        socket is refused while they are not: it could be neither claimed nor reached)."""
