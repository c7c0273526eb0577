"""Write-behind of `Device.last_seen`: a connect or a disconnect costs no query.

A reconnect storm would otherwise spend an UPDATE per socket, twice. Here each connect or
disconnect notes the time in memory (the latest per device), and one task writes what was noted
every `flush_seconds`, `BATCH_SIZE` devices per statement (`UPDATE ... SET last_seen = CASE id
WHEN ... END WHERE id IN (...)`). A device deleted meanwhile is simply not matched. A failed write
is logged and its times are kept for the next flush (unless newer ones were noted meanwhile);
`stop` writes everything still noted.

The process holding a socket shows the exact time at once (`GET /devices` overlays what it has
not written yet, see `seen`); other processes see it once written, within `flush_seconds`. With
several processes, a device that leaves one and joins another within that time may briefly keep
the older of the two times (the flushes are not ordered): it is off by at most `flush_seconds`,
and the device's next connect or disconnect sets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from itertools import islice

from simbridge.clock import Clock
from simbridge.models import Device

log = logging.getLogger("simbridge.last_seen")
BATCH_SIZE = 500  # devices per UPDATE: 1,500 parameters, under every SQLite's limit


class LastSeenWriter:
    def __init__(self, clock: Clock, flush_seconds: float) -> None:
        self._clock = clock
        self._flush_seconds = flush_seconds
        self._noted: dict[int, datetime] = {}  # device id -> time, not yet being written
        self._writing: dict[int, datetime] = {}  # being written now
        self._one_at_a_time = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def note(self, device_id: int) -> None:
        """The device was seen now (it connected or disconnected)."""
        self._noted[device_id] = self._clock()

    def seen(self, device_id: int) -> datetime | None:
        """The time noted here for the device and not yet written, if any."""
        return self._noted.get(device_id) or self._writing.get(device_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="last-seen-writer")

    async def stop(self) -> None:
        """Write everything noted, then end the writer task."""
        self._stopping.set()
        if self._task is not None:
            await self._task  # its last round writes what is noted
            self._task = None
        else:
            await self.flush()

    async def flush(self) -> None:
        """Write what was noted so far; on failure keep it for the next flush."""
        async with self._one_at_a_time:
            if not self._noted:
                return
            self._writing, self._noted = self._noted, {}
            try:
                noted = iter(self._writing.items())
                while batch := list(islice(noted, BATCH_SIZE)):
                    rows = [Device(id=device_id, last_seen=at) for device_id, at in batch]
                    await Device.bulk_update(rows, fields=["last_seen"])
            except Exception:  # the writer must outlive any failure (the database may return)
                log.exception("last_seen of %d devices could not be stored", len(self._writing))
                self._noted = self._writing | self._noted  # times noted meanwhile are newer
            finally:
                self._writing = {}

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._flush_seconds)
            await self.flush()
