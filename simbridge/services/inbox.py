"""What a device's inbox keeps (contract §6), read from the message log.

The inbox is not a second copy of the log: every frame routed to a device is one `message_logs`
row, and the frames that got a seq (`seq` not null) are its inbox. A frame is kept while it is
one of the device's latest `inbox_max` seqs and younger than `inbox_ttl_seconds`; older ones are
simply no longer read (retention deletes the rows themselves, with the rest of the log), so
nothing has to be pruned on the relay path.

There is no index on `seq`: a third index on the log cost a fifth of the relay's throughput on
SQLite. A device's rows are read newest first through its (`to_device_id`, `id`) index instead,
as many as can hold what is asked: ids grow with seqs, give or take the few frames in flight at
once, and the frames routed after the replay's `latest` (a flood while it is read) are allowed
for with `inbox_max` more rows. Seqs may jump (after a crash, the unused rest of a reserved
block), so "the latest `inbox_max`" counts frames, not seqs.
"""

from __future__ import annotations

from datetime import timedelta

from simbridge.config import Settings
from simbridge.models import MessageLog


async def kept_frames(
    device_id: int, since: int, latest: int, settings: Settings
) -> list[tuple[int, str]]:
    """(seq, frame) of the device's inbox after `since`, up to `latest`, in seq order."""
    if since >= latest:
        return []
    cutoff = settings.clock() - timedelta(seconds=settings.inbox_ttl_seconds)
    wanted = min(latest - since, settings.inbox_max)  # frames after `since` are at most this
    rows = (
        await MessageLog.filter(to_device_id=device_id)
        .order_by("-id")
        .limit(wanted + settings.inbox_max)
        .values_list("seq", "payload", "created_at")
    )
    kept = {
        int(seq): str(payload)
        for seq, payload, created_at in rows
        if seq is not None and since < seq <= latest and created_at > cutoff
    }
    return sorted(kept.items())[-settings.inbox_max :]  # the oldest go first
