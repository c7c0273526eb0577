"""The in-process broker: one process holds every socket, so there is nothing to cross."""

from __future__ import annotations

from collections.abc import Iterable

from simbridge.hub.broker import ControlHandler
from simbridge.hub.control import Control
from simbridge.hub.local import Hub
from simbridge.hub.open_requests import Asked


class MemoryBroker:
    """The broker of a single process; start-up refuses more than one worker with it."""

    def __init__(self) -> None:
        self._hub: Hub | None = None
        self._on_control: ControlHandler | None = None

    async def start(self, hub: Hub, on_control: ControlHandler) -> None:
        self._hub = hub
        self._on_control = on_control

    async def stop(self) -> None:
        return None

    async def claim(self, device_id: int) -> None:
        return None  # the hub closed any older socket of the device: it can only be here

    async def has_room(self, user_id: int, device_id: int) -> bool:
        return self._started_hub().has_room(user_id, device_id)

    async def release(self, device_id: int) -> None:
        return None

    async def deliver(self, device_id: int, frame: str, asked: Asked | None = None) -> bool:
        return False  # no other process

    async def online(self, device_ids: Iterable[int]) -> set[int]:
        return self._started_hub().online(device_ids)

    async def broadcast(self, control: Control) -> None:
        if self._on_control is None:
            raise RuntimeError("MemoryBroker.broadcast before start")
        await self._on_control(control)

    async def check(self) -> bool:
        return True  # nothing outside this process to reach

    def available(self) -> bool:
        return True

    def _started_hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("MemoryBroker used before start")
        return self._hub
