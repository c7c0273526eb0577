"""Write-behind logging of relayed messages.

Relaying must not wait for the database, so rows go into a bounded queue that one task
drains in batches (every `flush_seconds` or `batch_size` rows, whichever comes first). A full
queue makes `write` wait, which slows intake instead of dropping rows; `stop` commits
everything still queued.
"""

from __future__ import annotations

import asyncio
import logging

from simbridge.clock import Clock
from simbridge.services.log_store import LogRow, LogStore

log = logging.getLogger("simbridge.message_log")


class MessageLogWriter:
    def __init__(
        self,
        store: LogStore,
        clock: Clock,
        batch_size: int,
        flush_seconds: float,
        queue_size: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._queue: asyncio.Queue[LogRow] = asyncio.Queue(maxsize=queue_size)
        self._written = 0  # rows handed to `write` so far
        self._done = 0  # of those, rows committed (or given up on)
        self._progress = asyncio.Condition()
        self._batch_ready = asyncio.Event()  # set by `write` once a whole batch is queued
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-log-writer")

    async def stop(self) -> None:
        """Commit every queued row, then end the writer task and close the store."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._store.close()

    async def write(
        self, from_id: int | None, to_id: int | None, msg_type: str, payload: str
    ) -> None:
        row = (from_id, to_id, msg_type, payload, self._clock())
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:  # back-pressure: the sender waits for the writer
            await self._queue.put(row)
        if self._queue.qsize() + 1 >= self._batch_size:  # with the row the writer holds
            self._batch_ready.set()
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
        """The rows to insert next: up to a batch, gathered for at most `flush_seconds` after
        the first one arrived (one wake-up per batch, not one per row)."""
        batch = [await self._queue.get()]
        if self._queue.qsize() + 1 < self._batch_size:
            self._batch_ready.clear()
            try:
                await asyncio.wait_for(self._batch_ready.wait(), self._flush_seconds)
            except TimeoutError:
                pass
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _insert(self, batch: list[LogRow]) -> None:
        try:
            await asyncio.shield(self._store.insert(batch))
        except Exception:  # e.g. a device deleted since: keep every row that can be kept
            log.warning("batch of %d log rows refused; storing them one by one", len(batch))
            for row in batch:
                try:
                    await asyncio.shield(self._store.insert([row]))
                except Exception:
                    log.exception("could not store the log row of a %s", row[2])
