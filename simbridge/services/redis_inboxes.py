"""Each device's seqs and kept frames (contract §6) when several processes share Redis
(`SIMBRIDGE_BROKER=redis`); `Sequences` and the message log serve one process.

The counter and the inbox live in Redis (see `RedisBroker.keep`): a frame takes its seq, is kept
and reaches the owner of its device in one script call, so a device gets 1, 2, 3, ... whichever
process routes its frames, and a replay on one process sees what any other kept a moment before.
The message log still gets its row (history), with the seq, written behind as before.

Seqs are never given out twice, Redis restarts included: Redis may give out a seq only up to the
device's reserved mark (`r`), and that mark is written to the database (`devices.inbox_seq`)
before Redis hears of it. A counter missing from Redis (first use, or Redis lost it) starts
at the database's mark. The next block is reserved while
half of the current one is still unused, so the relay waits for the database only on a
device's first frame after Redis lost its counter, or when it outruns the reservation. Between
processes' restarts Redis keeps the counter, so seqs go on without a jump; after Redis itself
restarted they go on after the reserved mark, and its kept frames are gone (`gap`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tortoise.expressions import F

from simbridge.config import Settings
from simbridge.hub.broker import BrokerUnavailable
from simbridge.hub.open_requests import Asked
from simbridge.hub.redis import RedisBroker
from simbridge.models import Device

log = logging.getLogger("simbridge.inboxes")

BLOCK = 1024  # seqs reserved per database write, as `Sequences` does
UNSEEDED, EXHAUSTED = -1, -2  # the scripts' codes
MAX_ROUNDS = 64  # seed or reserve, then try again (each round serves a block at least)
HERE = -1  # `keep`'s receivers: the caller sends the frame to its own socket


@dataclass(frozen=True, slots=True)
class Kept:
    """What became of a frame: its seq (None: not kept, a command for an offline host), and
    where it went: `here` (the caller's own socket should get it) or to `receivers` nodes."""

    seq: int | None
    here: bool
    receivers: int


@dataclass(frozen=True, slots=True)
class Opened:
    """A `since` socket's start: the latest seq before the queued commands (the greeting's),
    the latest after them, the queued commands' seqs, and the kept frames after `since`."""

    greeted: int
    latest: int
    numbered: list[int]
    frames: list[tuple[int, str]]


class RedisInboxes:
    def __init__(self, broker: RedisBroker, settings: Settings) -> None:
        self._broker = broker
        self._settings = settings
        self._reserving: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def keep(
        self, device_id: int, frame: str, asked: Asked | None, *, event: bool, here: bool
    ) -> Kept:
        """Give the frame its seq and keep it; an event always, a command only when its host
        is online. Raises `BrokerUnavailable`."""
        for _ in range(MAX_ROUNDS):
            code, latest, reserved, receivers = await self._broker.keep(
                device_id, frame, asked, event=event, here=here, **self._bounds()
            )
            if code > 0:
                self._top_up(device_id, latest, reserved)
                return Kept(code, receivers == HERE, max(receivers, 0))
            if code == 0:
                return Kept(None, False, 0)
            await self._replenish(device_id, code, 1)
        raise RuntimeError(f"no seq for device {device_id} after {MAX_ROUNDS} rounds")

    async def open(self, device_id: int, since: int | None, frames: list[str]) -> Opened:
        """Append `frames` (a host's queued commands) with the next seqs, and read what a
        `since` socket missed after `since` (nothing when None). Raises `BrokerUnavailable`."""
        for _ in range(MAX_ROUNDS):
            result = await self._broker.open_inbox(
                device_id, -1 if since is None else since, frames, **self._bounds()
            )
            greeted, latest, reserved = (int(value) for value in result[:3])
            if greeted >= 0:
                self._top_up(device_id, latest, reserved)
                entries = result[3:]
                kept = [
                    (int(entries[i].partition("-")[0]), str(entries[i + 1]))
                    for i in range(0, len(entries), 2)
                ]
                numbered = list(range(greeted + 1, latest + 1))
                return Opened(greeted, latest, numbered, kept)
            await self._replenish(device_id, greeted, len(frames))
        raise RuntimeError(f"no seqs for device {device_id} after {MAX_ROUNDS} rounds")

    async def forget(self, device_id: int) -> None:
        """A removed device's counter and inbox go now, after a reservation under way for it
        (which would otherwise write its mark back). Without Redis they are left to their TTL."""
        reserving = self._reserving.get(device_id)
        if reserving is not None:
            await asyncio.gather(reserving, return_exceptions=True)
        try:
            await self._broker.forget_inbox(device_id)
        except BrokerUnavailable:
            log.warning(
                "Redis unreachable: removed device %s's inbox stays until its TTL", device_id
            )

    async def stop(self) -> None:
        """Wait for the reservations under way (a mark in the database, then in Redis)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def _bounds(self) -> dict[str, int]:
        settings = self._settings
        return {
            "now_ms": int(settings.clock().timestamp() * 1000),
            "ttl_ms": settings.inbox_ttl_seconds * 1000,
            "max_kept": settings.inbox_max,
        }

    async def _replenish(self, device_id: int, code: int, count: int) -> None:
        if code == UNSEEDED:
            await self._seed(device_id)
        elif code == EXHAUSTED:
            await self._reserve(device_id, count)
        else:
            raise RuntimeError(f"unexpected inbox script code {code}")

    async def _seed(self, device_id: int) -> None:
        """Start the device's counter in Redis at the database's mark, with nothing reserved
        yet (the first frame reserves a block): every seq ever given out is at most that mark.
        The mark is read, not moved: seeders racing each other (in this process or others)
        all read the same mark until one of them reserves, which it does only once its seed
        is in Redis, so whichever seed lands first, the counter starts where it should."""
        marks = await Device.filter(id=device_id).values_list("inbox_seq", flat=True)
        if not marks:
            raise LookupError(f"device {device_id} is gone")
        mark: int = marks[0]  # type: ignore[assignment]
        await self._broker.seed_inbox(device_id, int(mark), int(mark))

    async def _reserve(self, device_id: int, count: int) -> None:
        reserving = self._reserving.get(device_id)
        if reserving is None:
            reserving = self._start_reserving(device_id, BLOCK + count)
        await asyncio.shield(reserving)

    def _top_up(self, device_id: int, latest: int, reserved: int) -> None:
        """Reserve the next block while half of this one is still unused."""
        if reserved - latest < BLOCK // 2 and device_id not in self._reserving:
            self._start_reserving(device_id, BLOCK)

    def _start_reserving(self, device_id: int, ahead: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._write_reservation(device_id, ahead))
        self._reserving[device_id] = task
        self._background.add(task)
        task.add_done_callback(lambda done: self._reserved(device_id, done))
        return task

    def _reserved(self, device_id: int, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if self._reserving.get(device_id) is task:
            del self._reserving[device_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("reserving seqs of device %s failed", device_id, exc_info=task.exception())

    async def _write_reservation(self, device_id: int, ahead: int) -> None:
        """Move the database's mark `ahead`, then let Redis give out seqs up to it."""
        mark = await self._advance_mark(device_id, ahead)
        await self._broker.reserve_inbox(device_id, mark)

    async def _advance_mark(self, device_id: int, ahead: int) -> int:
        """Add `ahead` to the device's mark in the database; the mark read afterwards (other
        processes may have moved it further: it only grows)."""
        await Device.filter(id=device_id).update(inbox_seq=F("inbox_seq") + ahead)
        marks = await Device.filter(id=device_id).values_list("inbox_seq", flat=True)
        if not marks:
            raise LookupError(f"device {device_id} is gone")
        mark: int = marks[0]  # type: ignore[assignment]
        return int(mark)
