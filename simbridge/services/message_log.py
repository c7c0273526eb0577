"""Write-behind logging of relayed messages.

Relaying must not wait for the database, so rows go into a bounded queue that one task
drains in batches (every `flush_seconds` or `batch_size` rows, whichever comes first). A full
queue makes `write` wait, which slows intake instead of dropping rows; `stop` commits
everything still queued.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from simbridge.clock import Clock
from simbridge.models import MessageLog

log = logging.getLogger("simbridge.message_log")


@dataclass(slots=True)
class LogRow:
    from_device_id: int | None
    to_device_id: int | None
    msg_type: str
    payload: str
    created_at: datetime


class MessageLogWriter:
    def __init__(
        self, clock: Clock, batch_size: int, flush_seconds: float, queue_size: int
    ) -> None:
        self._clock = clock
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._queue: asyncio.Queue[LogRow] = asyncio.Queue(maxsize=queue_size)
        self._written = 0  # rows handed to `write` so far
        self._done = 0  # of those, rows committed (or given up on)
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-log-writer")

    async def stop(self) -> None:
        """Commit every queued row, then end the writer task."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def write(
        self, from_id: int | None, to_id: int | None, msg_type: str, payload: str
    ) -> None:
        await self._queue.put(LogRow(from_id, to_id, msg_type, payload, self._clock()))
        self._written += 1  # only once queued: a write cancelled while waiting adds nothing

    async def flush(self) -> None:
        """Wait until every row written before this call is committed."""
        target = self._written
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            await self._insert(batch)
            async with self._progress:
                self._done += len(batch)
                self._progress.notify_all()

    async def _next_batch(self) -> list[LogRow]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._flush_seconds
        while len(batch) < self._batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _insert(self, batch: list[LogRow]) -> None:
        rows = [
            MessageLog(
                from_device_id=row.from_device_id,
                to_device_id=row.to_device_id,
                msg_type=row.msg_type,
                payload=row.payload,
                created_at=row.created_at,
            )
            for row in batch
        ]
        try:
            await asyncio.shield(MessageLog.bulk_create(rows))
        except Exception:  # e.g. a device deleted since: keep every row that can be kept
            log.warning("batch of %d log rows refused; storing them one by one", len(rows))
            for row in rows:
                try:
                    await asyncio.shield(row.save())
                except Exception:
                    log.exception("could not store the log row of a %s", row.msg_type)
