"""Each device's inbox seqs (contract §6): 1, 2, 3, ... per recipient, never given out twice,
across restarts too, with no database round trip on the relay path.

A device's counter is read once from `Device.inbox_seq`, then seqs are given out from memory.
A seq may be given out only once the database has it reserved: the mark moves `BLOCK` ahead at a
time, and the next block is reserved while half of the current one is still unused, so relaying
waits for the database only on a device's first frame after a start, or when it outruns the
reservation. A graceful stop writes each counter's exact value back (`release`), so the next run
goes on with the very next seq. After a crash the next run starts after the reserved mark: the
seqs in between were lost with the crash or never given out, and a device that asks for them is
told `gap`.

One process gives out a device's seqs: inboxes need the memory broker (see `Runtime.start`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from simbridge.models import Device

BLOCK = 1024  # seqs reserved per database write


@dataclass(slots=True)
class _Counter:
    given: int  # the latest seq given out
    reserved: int  # the database's mark: every seq up to it may be given out
    reserving: asyncio.Task[None] | None = None


class Sequences:
    def __init__(self) -> None:
        self._counters: dict[int, _Counter] = {}
        self._loading: dict[int, asyncio.Task[_Counter | None]] = {}

    async def ready(self, device_id: int, count: int = 1) -> bool:
        """Make the device's next `count` seqs available to `take` without waiting; False if
        there is no such device. The caller decides whether to take it only after this returns, with
        nothing awaited in between: then no socket can attach between its decision and its
        seq (see `replay_inbox`)."""
        counter = self._counters.get(device_id) or await self._load(device_id)
        if counter is None:
            return False
        while counter.given + count > counter.reserved:  # each round reserves a block
            await self._reserve(device_id, counter)
        return True

    def has_ready(self, device_id: int) -> bool:
        """Whether the device's next seq can be taken without `ready` (nearly always)."""
        counter = self._counters.get(device_id)
        return counter is not None and counter.given < counter.reserved

    def take(self, device_id: int) -> int:
        """The device's next seq (after `ready`); reserves the next block ahead of need."""
        counter = self._counters[device_id]
        counter.given += 1
        if counter.reserved - counter.given < BLOCK // 2 and counter.reserving is None:
            counter.reserving = asyncio.create_task(self._write_mark(device_id, counter))
        return counter.given

    async def latest(self, device_id: int) -> int:
        """The latest seq given out to the device (0 if none)."""
        counter = self._counters.get(device_id) or await self._load(device_id)
        return 0 if counter is None else counter.given

    def current(self, device_id: int) -> int:
        """`latest`, for a device whose counter was read already (by `latest`): no await, so
        nothing can be given out between this reading and what the caller does next."""
        return self._counters[device_id].given

    async def release(self) -> None:
        """Write every counter's exact value back (at a graceful stop, once nothing is being
        relayed any more), so that the next run goes on without a gap."""
        pending = [c.reserving for c in self._counters.values() if c.reserving is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        marks = [Device(id=device_id, inbox_seq=c.given) for device_id, c in self._counters.items()]
        for start in range(0, len(marks), 500):
            await Device.bulk_update(marks[start : start + 500], fields=["inbox_seq"])

    async def _load(self, device_id: int) -> _Counter | None:
        loading = self._loading.get(device_id)
        if loading is None:
            loading = asyncio.create_task(self._read(device_id))
            self._loading[device_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(device_id, None))
        return await asyncio.shield(loading)

    async def _read(self, device_id: int) -> _Counter | None:
        marks = await Device.filter(id=device_id).values_list("inbox_seq", flat=True)
        if not marks:
            return None
        mark = int(marks[0])  # type: ignore[call-overload]
        return self._counters.setdefault(device_id, _Counter(given=mark, reserved=mark))

    async def _reserve(self, device_id: int, counter: _Counter) -> None:
        if counter.reserving is None:
            counter.reserving = asyncio.create_task(self._write_mark(device_id, counter))
        await asyncio.shield(counter.reserving)

    async def _write_mark(self, device_id: int, counter: _Counter) -> None:
        """Move the device's mark a block past what is given out; one at a time per device."""
        try:
            mark = max(counter.reserved, counter.given) + BLOCK
            await Device.filter(id=device_id).update(inbox_seq=mark)
            counter.reserved = mark
        finally:
            counter.reserving = None
