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
from simbridge.services.command_changes import CommandChanges
from simbridge.services.log_store import LogStore, Row

log = logging.getLogger("simbridge.message_log")
BATCHES_PER_TRIP = 8


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
        self._queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=queue_size)
        self._written = 0  # rows handed to `write` so far
        self._done = 0  # of those, rows committed (or given up on)
        self._progress = asyncio.Condition()
        self._batch_ready = asyncio.Event()  # set by `write` once a whole batch is queued
        self._task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-log-writer")

    async def stop(self) -> None:
        """Commit every queued row, then end the writer task and close the store."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._in_flight is not None:  # the store must not close under a running insert
            await asyncio.gather(self._in_flight, return_exceptions=True)
        await self._store.close()

    async def write(
        self,
        from_id: int | None,
        to_id: int | None,
        msg_type: str,
        payload: str,
        seq: int | None = None,
    ) -> None:
        """Queue one row; `seq` is the frame's place in its recipient's inbox, if it has one."""
        row = (from_id, to_id, msg_type, payload, self._clock(), seq)
        if not self.put_nowait(row):  # back-pressure: the sender waits for the writer
            await self._queue.put(row)
            self._queued()

    @property
    def queued_rows(self) -> int:
        """Rows handed to the writer and not committed yet (a command-state change, or a list
        of them, counts one), the batch being written included."""
        return self._written - self._done

    def write_nowait(
        self,
        from_id: int | None,
        to_id: int | None,
        msg_type: str,
        payload: str,
        seq: int | None = None,
    ) -> bool:
        """`write` without a coroutine, the way of every relayed frame; False, with nothing
        queued, when the queue is full (then `write`, which waits for room)."""
        return self.put_nowait((from_id, to_id, msg_type, payload, self._clock(), seq))

    async def change(self, change: CommandChanges) -> None:
        """Queue a change of a command's state (or a list of them), to be stored after every
        row queued before."""
        if not self.put_nowait(change):
            await self._queue.put(change)
            self._queued()

    def put_nowait(self, row: Row) -> bool:
        """Queue `row` if there is room now (the relay's way: no coroutine); False if full."""
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            return False
        self._queued()
        return True

    def _queued(self) -> None:
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
            batches = await self._next_batches()
            self._in_flight = asyncio.ensure_future(self._store.insert(batches))
            try:
                await asyncio.shield(self._in_flight)  # a cancelled stop still commits
            except Exception:  # the writer must outlive any failure, or relaying would stall
                rows = sum(len(batch) for batch in batches)
                log.exception("%d message-log rows could not be stored", rows)
            async with self._progress:
                self._done += sum(len(batch) for batch in batches)
                self._progress.notify_all()

    async def _next_batches(self) -> list[list[Row]]:
        """The rows to commit next: a batch gathered for at most `flush_seconds` after its first
        row arrived (one wake-up per batch, not per row), and, when whole batches are waiting,
        up to `BATCHES_PER_TRIP - 1` of them: a backlog costs one trip to the store per several
        batches rather than one each."""
        first = [await self._queue.get()]
        if self._queue.qsize() + 1 < self._batch_size:
            self._batch_ready.clear()
            try:
                await asyncio.wait_for(self._batch_ready.wait(), self._flush_seconds)
            except TimeoutError:
                pass
        while len(first) < self._batch_size and not self._queue.empty():
            first.append(self._queue.get_nowait())
        batches = [first]
        while len(batches) < BATCHES_PER_TRIP and self._queue.qsize() >= self._batch_size:
            batches.append([self._queue.get_nowait() for _ in range(self._batch_size)])
        return batches
