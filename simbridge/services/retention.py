"""Retention: message log rows and command states older than `retention_days` are deleted, a
batch at a time (a command's state is kept as long as its history, contract §7).

Rows are inserted in relay order, so ids grow with `created_at`: pruning walks the table from
its oldest id and stops at the first row still within retention. Each batch is one short
DELETE, and the task yields between batches, so relaying and REST never wait long for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

from tortoise.models import Model

from simbridge.clock import Clock
from simbridge.models import CommandRecord, MessageLog, PairingCode

log = logging.getLogger("simbridge.retention")
MAX_BATCHES_PER_RUN = 10_000  # 50 million rows a pass at the default batch size


async def prune_older_than(
    cutoff: datetime, batch_size: int, max_batches: int, model: type[Model] = MessageLog
) -> int:
    """Delete rows of `model` created before `cutoff`, oldest first; returns how many went."""
    deleted = 0
    after_id = 0
    for _ in range(max_batches):
        rows = await (
            model.filter(id__gt=after_id)
            .order_by("id")
            .limit(batch_size)
            .values_list("id", "created_at")
        )
        expired = [row_id for row_id, created_at in rows if created_at < cutoff]
        if expired:
            deleted += await model.filter(id__in=expired).delete()
        if len(expired) < len(rows) or len(rows) < batch_size:
            break
        after_id = rows[-1][0]
        await asyncio.sleep(0)  # let relaying and requests in between batches
    return deleted


ExclusiveRun = Callable[[], AbstractAsyncContextManager[bool]]


class RetentionTask:
    """Prunes every `interval_seconds`, from start-up until `stop`.

    Each pass runs inside `exclusive` (yields whether this process may run it): with several
    workers or machines on one database, one of them prunes and the others skip that pass.
    """

    def __init__(
        self,
        clock: Clock,
        days: int,
        interval_seconds: float,
        batch_size: int,
        exclusive: ExclusiveRun,
    ) -> None:
        self._exclusive = exclusive
        self._clock = clock
        self._keep = timedelta(days=days)
        self._interval = interval_seconds
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-log-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def prune(self) -> int | None:
        """One pass: expired pairing codes, and message log rows past retention; returns how
        many rows went, or None if another process is running its pass."""
        async with self._exclusive() as mine:
            if not mine:
                return None
            now = self._clock()
            await PairingCode.filter(expires_at__lt=now).delete()
            cutoff = now - self._keep
            await prune_older_than(cutoff, self._batch_size, MAX_BATCHES_PER_RUN, CommandRecord)
            return await prune_older_than(cutoff, self._batch_size, MAX_BATCHES_PER_RUN)

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.prune()
                if deleted:
                    log.info("retention: deleted %d message log rows", deleted)
            except Exception:
                log.exception("retention pass failed; trying again next interval")
            await asyncio.sleep(self._interval)
