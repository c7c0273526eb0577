"""Whose each device is, remembered so that a socket handshake needs no query.

A handshake needs three facts about its device: the owner, the type (the socket's path), and
the digest of its device token. They are remembered for `user_cache_seconds`, like users in
`identities.py`, and the least recently used go first once `capacity` are held. Revocations
through the API (device deletion, token rotation, logout-all, password change) are broadcast to
every process, whose `Runtime.apply` forgets the entries they touch, so they take effect at once;
the time limit bounds how long a change made behind the server's back (directly in the
database) could go unseen. A device that does not exist is not remembered: it may be created
the next moment.

Devices not remembered are read together: the handshakes that miss while a read is on its way
wait for the next one, which reads all their devices in one query. A reconnect storm on a cold
cache (after `user_cache_seconds`, the usual case) costs a few queries, not one per socket.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from simbridge.config import Settings
from simbridge.models import Device, DeviceType, is_stored_id

CAPACITY = 32_768  # devices; about 300 bytes each
READ_BATCH = 500  # devices per query: within every database's limit on parameters


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    user_id: int
    device_type: DeviceType
    token_digest: str | None  # SHA-256 of the device token; None if it has none


@dataclass(frozen=True, slots=True)
class _Known:
    record: DeviceRecord
    until: datetime


class DeviceRecords:
    def __init__(self, settings: Settings, capacity: int = CAPACITY) -> None:
        self._settings = settings
        self._capacity = capacity
        self._known: OrderedDict[int, _Known] = OrderedDict()
        self._generation = 0  # bumped by every forget: a load that raced with one is not kept
        self._wanted: dict[int, asyncio.Future[DeviceRecord | None]] = {}  # the next read's
        self._reader: asyncio.Task[None] | None = None

    async def get(self, device_id: int) -> DeviceRecord | None:
        """The device's record, remembered or read from the database; None if there is no such
        device."""
        record = self.remembered(device_id)
        if record is not None or not is_stored_id(device_id):
            return record
        wanted = self._wanted.get(device_id)
        if wanted is None:
            wanted = self._wanted[device_id] = asyncio.get_running_loop().create_future()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_wanted(), name="device-records")
        return await asyncio.shield(wanted)  # a handshake given up on leaves the read to others

    async def _read_wanted(self) -> None:
        """Read every wanted device, one query per round, until none is wanted."""
        try:
            while self._wanted:
                batch = list(islice(self._wanted, READ_BATCH))
                wanted = {device_id: self._wanted.pop(device_id) for device_id in batch}
                try:
                    records = await self._read(batch)
                except Exception as exc:  # each handshake waiting fails with it
                    for future in wanted.values():
                        future.set_exception(exc)
                    continue
                for device_id, future in wanted.items():
                    future.set_result(records.get(device_id))
        finally:
            self._reader = None

    async def _read(self, device_ids: list[int]) -> dict[int, DeviceRecord]:
        generation = self._generation
        rows = await Device.filter(id__in=device_ids).values_list(
            "id", "user_id", "device_type", "device_token"
        )
        records = {row[0]: DeviceRecord(row[1], row[2], row[3]) for row in rows}
        ttl = self._settings.user_cache_seconds
        if ttl > 0 and generation == self._generation:
            until = self._settings.clock() + timedelta(seconds=ttl)
            for device_id, record in records.items():
                self._known[device_id] = _Known(record, until)
                self._known.move_to_end(device_id)
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)
        return records

    def remembered(self, device_id: int) -> DeviceRecord | None:
        """The device's record if it is remembered and not yet expired; never a query."""
        known = self._known.get(device_id)
        if known is None or known.until <= self._settings.clock():
            return None
        self._known.move_to_end(device_id)
        return known.record

    def forget(self, device_id: int) -> None:
        """The device was deleted or its token rotated: read it again next time."""
        self._generation += 1
        self._known.pop(device_id, None)

    def forget_user(self, user_id: int) -> None:
        """Something about the user's sockets changed: read each of their devices again.
        A scan, but control messages are rare."""
        self._generation += 1
        for device_id in [d for d, known in self._known.items() if known.record.user_id == user_id]:
            del self._known[device_id]

    def forget_everything(self) -> None:
        """Revocations may have been missed (the broker lost messages): read devices again."""
        self._generation += 1
        self._known.clear()
