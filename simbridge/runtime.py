"""The composition root: builds every service of one server process, starts them in order,
and stops them in reverse. It imports no web framework; the Sanic listeners only call it.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass
from functools import partial

from simbridge.config import Settings
from simbridge.db import apply_migrations, start_orm, stop_orm
from simbridge.db_locks import RETENTION, holding
from simbridge.hub import Broker, Hub, make_broker
from simbridge.hub.control import (
    CloseSessions,
    CommandsQueued,
    Control,
    ForgetPairings,
    ForgetUser,
    WaitedAnswer,
    WebhooksChanged,
)
from simbridge.hub.open_requests import OpenRequests
from simbridge.hub.redis import RedisBroker
from simbridge.limits import Limiter, MemoryLimiter
from simbridge.metrics import Metrics, share_from_env
from simbridge.protocol import CLOSE_GOING_AWAY, CLOSE_REMOVED, CLOSE_REVOKED
from simbridge.redis_limiter import RedisLimiter
from simbridge.services.admission import no_longer_admitted
from simbridge.services.commands import Commands
from simbridge.services.device_records import DeviceRecords
from simbridge.services.directory import PairingDirectory
from simbridge.services.guard import Guard
from simbridge.services.identities import Identities
from simbridge.services.last_seen import LastSeenWriter
from simbridge.services.log_store import OrmLogStore, SqliteLogStore
from simbridge.services.message_log import MessageLogWriter
from simbridge.services.redis_inboxes import RedisInboxes
from simbridge.services.relay import Relay
from simbridge.services.retention import RetentionTask
from simbridge.services.sequences import Sequences
from simbridge.services.webhook_delivery import RESUMER as WEBHOOK_RESUMER
from simbridge.services.webhook_delivery import Webhooks

# Worker threads (the SQLite log writer, bcrypt) need the GIL back after each call into C; with
# Python's default of 5 ms a busy event loop made them wait that long every time, and the log
# writer, not the relay, set the pace (throughput 0.55-0.59 of the bare relay, 0.62-0.70 at 1 ms).
GIL_SWITCH_SECONDS = 0.001

log = logging.getLogger("simbridge")


@dataclass(frozen=True, slots=True)
class Runtime:
    """The services of one process, started."""

    settings: Settings
    hub: Hub
    broker: Broker
    directory: PairingDirectory
    identities: Identities
    device_records: DeviceRecords
    writer: MessageLogWriter
    last_seen: LastSeenWriter
    # Kept frames (contract §6): seqs from `sequences` and the message log in one process
    # (memory broker), from `inboxes` in Redis across processes; at most one is set.
    sequences: Sequences | None
    inboxes: RedisInboxes | None
    commands: Commands
    relay: Relay
    guard: Guard
    limiter: Limiter
    retention: RetentionTask
    metrics: Metrics
    webhooks: Webhooks

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Database first, then the broker and the writers, then the background tasks."""
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        applied = await apply_migrations(settings)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        await start_orm(settings)
        hub = Hub(
            settings.send_timeout_seconds,
            settings.max_sockets_per_user,
            OpenRequests(settings.clock, settings.request_correlation_seconds),
        )
        directory = PairingDirectory()
        writer = MessageLogWriter(
            store=SqliteLogStore(settings.sqlite_path) if settings.is_sqlite else OrmLogStore(),
            clock=settings.clock,
            batch_size=settings.log_batch_size,
            flush_seconds=settings.log_flush_seconds,
            queue_size=settings.log_queue_size,
        )

        last_seen = LastSeenWriter(settings.clock, settings.last_seen_flush_seconds)
        commands = Commands(writer, settings.clock)
        await commands.load()

        async def resync() -> None:  # `runtime` is bound below, before the broker starts
            await runtime.resync()

        broker = make_broker(settings, on_resync=resync)
        # One process gives out its devices' seqs itself; several share them through Redis.
        # Kept frames: by this process alone (memory broker), in Redis across processes when
        # asked for (SIMBRIDGE_REDIS_INBOXES), else not at all (`since` is then refused).
        sequences = Sequences() if settings.broker == "memory" else None
        inboxes = None
        if isinstance(broker, RedisBroker) and settings.redis_inboxes:
            inboxes = RedisInboxes(broker, settings)
        limiter = _limiter(settings)
        # With several workers, the main process made a directory where they share their counts
        metrics = Metrics(hub.open_by_type, lambda: writer.queued_rows, share_from_env())
        webhooks = Webhooks(settings, metrics.counts.webhook_dropped)
        runtime = cls(
            settings=settings,
            hub=hub,
            broker=broker,
            directory=directory,
            identities=Identities(settings),
            device_records=DeviceRecords(settings),
            writer=writer,
            last_seen=last_seen,
            sequences=sequences,
            inboxes=inboxes,
            commands=commands,
            relay=Relay(
                hub,
                broker,
                directory,
                writer,
                settings,
                last_seen,
                sequences,
                commands,
                inboxes,
                metrics.counts,
                webhooks,
            ),
            guard=Guard(limiter, settings),
            limiter=limiter,
            retention=RetentionTask(
                clock=settings.clock,
                days=settings.retention_days,
                interval_seconds=settings.retention_interval_seconds,
                batch_size=settings.retention_batch_size,
                exclusive=partial(holding, settings, RETENTION, wait=False),
            ),
            metrics=metrics,
            webhooks=webhooks,
        )
        await broker.start(hub, runtime.apply)
        writer.start()
        commands.start()
        last_seen.start()
        runtime.retention.start()
        metrics.start()
        # Several processes: only one of them resumes the stored deliveries.
        several = settings.broker == "redis"
        await webhooks.start(
            resumer=partial(holding, settings, WEBHOOK_RESUMER, wait=False) if several else None,
        )
        if settings.gc_freeze:
            # What start-up built lives as long as the server: keep it out of every collection,
            # so a full one (a reconnect storm makes a few) does not walk it each time (storm of
            # 1,000 hosts: 0.47 -> 0.28-0.36 s, 380 -> 200-290 µs of CPU per connect).
            gc.collect()
            gc.freeze()
        return runtime

    @property
    def keeps_frames(self) -> bool:
        """Whether frames are kept, so that `since` sockets can be served."""
        return self.sequences is not None or self.inboxes is not None

    async def apply(self, control: Control) -> None:
        """Act on a control message from any process, against this process's own state.

        A `CloseSessions` first forgets the device records it concerns, then picks the sessions
        to close, with nothing awaited in between: a socket registered later is checked against
        forgotten records (`Admission.still_valid`), one registered earlier is closed here.
        """
        if isinstance(control, CloseSessions):
            if control.device_id is not None:
                self.device_records.forget(control.device_id)
            else:
                self.device_records.forget_user(control.user_id)
            closing = [s for s in self.hub.sessions_of(control.user_id) if control.matches(s)]
            await self.hub.close_matching(closing, control.code, control.reason)
            for session in closing:
                await self.broker.release(session.device_id)
        elif isinstance(control, ForgetPairings):
            self.directory.forget(*control.device_ids)
        elif isinstance(control, ForgetUser):
            self.identities.forget(control.user_id)
        elif isinstance(control, CommandsQueued):
            await self.relay.commands_queued(control.host_id)
        elif isinstance(control, WaitedAnswer):
            self.relay.answer_waiters(control.host_id, control.req_id, control.event)
        elif isinstance(control, WebhooksChanged):
            await self.webhooks.reload(control.user_id)

    async def resync(self) -> None:
        """The broker may have lost control messages (Redis was away): forget every cache, and
        close the sockets whose device or credential went meanwhile."""
        self.directory.forget_everything()
        self.identities.forget_everything()
        self.device_records.forget_everything()
        await self.webhooks.reload()
        gone = await no_longer_admitted(self.hub.sessions())
        for code, reason in ((CLOSE_REVOKED, "revoked"), (CLOSE_REMOVED, "device removed")):
            closing = [session for session, why in gone if why == code]
            await self.hub.close_matching(closing, code, reason)

    async def close_sockets(self) -> None:
        """Close every socket with 1001 and wait (up to the graceful shutdown time) for their
        handlers to end, so no frame that was already read is dropped half-way."""
        await self.hub.close_every(CLOSE_GOING_AWAY, "server shutdown")
        if not await self.hub.wait_until_none(self.settings.graceful_shutdown_seconds):
            log.warning("%d socket handlers still busy at shutdown", len(self.hub))

    async def stop(self) -> None:
        """After the sockets: background tasks, the broker, the writers (flushed), the
        database."""
        await self.webhooks.stop()  # stores the deliveries still pending
        await self.retention.stop()
        await self.metrics.stop()
        if self.inboxes is not None:
            await self.inboxes.stop()
        await self.broker.stop()
        await self.limiter.close()
        await self.commands.stop()  # its rows go to the writer, which commits them
        await self.writer.stop()
        await self.last_seen.stop()
        if self.sequences is not None:
            await self.sequences.release()
        await stop_orm()
        if self.settings.gc_freeze:
            gc.unfreeze()  # a process that starts another server collects it again


def _limiter(settings: Settings) -> Limiter:
    """Rate limits shared by every process through Redis when the broker is Redis."""
    if settings.broker == "redis":
        return RedisLimiter(settings.redis_url, settings.redis_prefix, settings.clock)
    return MemoryLimiter(settings.clock)
