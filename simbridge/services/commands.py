"""Command states and the queue of commands waiting for their host (contract §7).

Every command with a usable `req_id` has a row in `commands` (`CommandRecord`). On the relay
path rows are only written behind, with the message log (`command_changes`); queuing a command
is the exception: a `queued` reply promises that the command is stored, so it waits for the
write. Which hosts have queued commands is known here in memory (read once at start), so a
host's handshake needs no query unless it has something waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from simbridge.clock import Clock
from simbridge.models import CommandRecord, CommandState
from simbridge.services.command_changes import CommandAnswered, CommandChange, NewCommand
from simbridge.services.message_log import MessageLogWriter

MAX_REQ_ID_LENGTH = 128  # the column's width; a command with a longer id has no state
MAX_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_TTL_SECONDS = 24 * 3600
ANSWER_WINDOW_SECONDS = 1.0  # how long a sent command's row waits for its answer, in memory
READY_BATCH = 256  # command rows handed to the writer at once


@dataclass(frozen=True, slots=True)
class OfflinePolicy:
    """What to do with a command whose host is offline: refuse it (v1), or queue it."""

    queue: bool = False
    ttl_seconds: int = DEFAULT_TTL_SECONDS


FAIL = OfflinePolicy()
SENT = CommandState.SENT


def policy_of(frame: dict[str, Any]) -> OfflinePolicy | None:
    """The `offline` / `ttl_seconds` members of a socket command frame; None when invalid."""
    if "offline" not in frame and "ttl_seconds" not in frame:
        return FAIL  # a v1 command: nearly all of them
    offline = frame.get("offline", "fail")
    ttl = frame.get("ttl_seconds", DEFAULT_TTL_SECONDS)
    if offline not in ("fail", "queue"):
        return None
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_SECONDS:
        return None
    return OfflinePolicy(offline == "queue", ttl)


def req_key(req_id: Any) -> str | None:
    """The text a command's state is found by (`GET /commands/{req_id}`): the `req_id` itself,
    or an integer one written out; None for any other id, which gets no state."""
    if isinstance(req_id, int) and not isinstance(req_id, bool):
        req_id = str(req_id)
    if isinstance(req_id, str) and 0 < len(req_id) <= MAX_REQ_ID_LENGTH:
        return req_id
    return None


def cmd_of(frame: dict[str, Any]) -> str:
    cmd = frame.get("cmd")
    return cmd if isinstance(cmd, str) else orjson.dumps(cmd).decode()


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """A command waiting for its host: its row, the frame to write, who queued it (None: the
    REST API)."""

    id: int
    host_id: int
    req_id: str
    frame: str
    sender_id: int | None


class Commands:
    """The states of commands, and the queue of those waiting for their host."""

    def __init__(self, writer: MessageLogWriter, clock: Clock) -> None:
        self._writer = writer
        self._clock = clock
        self._queued_hosts: set[int] = set()
        self._queued_count: dict[int, int] = {}  # per host: commands queued since start
        # per host whose queue is being written: its lock, and how many hold or wait for it
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        # (host, req_id) of queued commands being written: the answer, if one came already
        self._writing_queue: dict[tuple[int, str], str | None] = {}
        # Rows of `sent` commands waiting a little for their answer: (until when, the row)
        self._awaiting: dict[tuple[int, str], tuple[float, NewCommand]] = {}
        self._ready: list[CommandChange] = []  # for the writer, gathered
        self._overflow: deque[list[CommandChange]] = deque()  # gathered when it had no room
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Learn which hosts have commands waiting (at start)."""
        hosts = (
            await CommandRecord.filter(state=CommandState.QUEUED)
            .distinct()
            .values_list("host_device_id", flat=True)
        )
        self._queued_hosts = {int(host) for host in hosts}  # type: ignore[call-overload]

    # --- the relay path: written behind -------------------------------------------------------
    def handing_over(
        self, req_id: str, user_id: int, host_id: int, sender_id: int | None, cmd: str
    ) -> None:
        """The command is about to be handed to its host: its row, `sent`, waits up to
        `ANSWER_WINDOW_SECONDS` for the answer (most come within it, and the command then costs
        one row, written once, instead of an INSERT and an UPDATE), unless `refused` or `queue`
        says it was not handed over after all. No coroutine: this is every command's way."""
        key = (host_id, req_id)
        command = NewCommand(req_id, user_id, host_id, sender_id, cmd, SENT, self._clock())
        previous = self._awaiting.pop(key, None)  # the same req_id again: the first goes now
        self._awaiting[key] = (time.monotonic() + ANSWER_WINDOW_SECONDS, command)
        if previous is not None:
            self._write_soon(previous[1])

    def _not_handed_over(self, host_id: int, req_id: str) -> NewCommand | None:
        awaiting = self._awaiting.pop((host_id, req_id), None)
        return None if awaiting is None else awaiting[1]

    async def refused(self, host_id: int, req_id: str) -> None:
        """The command was refused: its host is offline (policy `fail`)."""
        command = self._not_handed_over(host_id, req_id)
        if command is not None:
            command.state = CommandState.FAILED
            await self._writer.change(command)

    def answered(self, host_id: int, req_id: str, event: str) -> None:
        """The host sent an event with the command's `req_id` (only the first one counts):
        written with the command's row if that still waits for it, else as an UPDATE."""
        key = (host_id, req_id)
        awaiting = self._awaiting.pop(key, None)
        if awaiting is not None:
            command = awaiting[1]
            command.state, command.answer = CommandState.ANSWERED, event
            self._write_soon(command)
        elif key in self._writing_queue:  # a queued command, answered before it is `sent`
            if self._writing_queue[key] is None:
                self._writing_queue[key] = event
        else:
            self._write_soon(CommandAnswered(host_id, req_id, event, self._clock()))

    def _write_soon(self, change: CommandChange) -> None:
        """Gathered, and handed to the writer as one item a `READY_BATCH` at a time (or by the
        timer task): one queue item per command cost the relay a fifth of its throughput."""
        ready = self._ready
        ready.append(change)
        if len(ready) >= READY_BATCH:
            self._ready = []
            if not self._writer.put_nowait(ready):  # full: the timer task waits for room
                self._overflow.append(ready)

    async def _write_due(self, everything: bool) -> None:
        """Hand the writer what is gathered, with the rows whose window has passed (all of
        them: `everything`); those are the oldest, as the windows all have the same length."""
        awaiting, now = self._awaiting, time.monotonic()
        while awaiting:
            key = next(iter(awaiting))
            due, command = awaiting[key]
            if due > now and not everything:
                break
            del awaiting[key]
            self._ready.append(command)
        if self._ready:
            self._overflow.append(self._ready)
            self._ready = []
        while self._overflow:
            await self._writer.change(self._overflow.popleft())

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_due_in_time(), name="command-states")

    async def stop(self) -> None:
        """Hand the writer every row still waiting (before the writer stops)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._write_due(everything=True)

    async def flush(self) -> None:
        """Until every state recorded so far is in the database."""
        await self._write_due(everything=True)
        await self._writer.flush()

    async def _write_due_in_time(self) -> None:
        while True:  # until `stop` cancels it
            await asyncio.sleep(ANSWER_WINDOW_SECONDS / 2)
            await self._write_due(everything=False)

    # --- the queue ----------------------------------------------------------------------------
    async def queue(self, host_id: int, req_id: str, frame: str, ttl_seconds: int) -> None:
        """Keep the command (refused as offline) until its host connects; returns once it is
        stored. Every process is then told (`note_queued`)."""
        command = self._not_handed_over(host_id, req_id)
        if command is None:  # answered already: it was handed over after all
            return
        command.state, command.frame = CommandState.QUEUED, frame
        command.expires_at = command.created_at + timedelta(seconds=ttl_seconds)
        await self._writer.change(command)
        await self._writer.flush()

    def note_queued(self, host_id: int) -> None:
        """A command was queued for the host (by this process or another)."""
        self._queued_hosts.add(host_id)
        self._queued_count[host_id] = self._queued_count.get(host_id, 0) + 1

    def has_queued(self, host_id: int) -> bool:
        return host_id in self._queued_hosts or host_id in self._locks

    def queued_count(self, host_id: int) -> int:
        """How many commands were queued for the host since this process started: a change
        tells that one was queued meanwhile."""
        return self._queued_count.get(host_id, 0)

    @asynccontextmanager
    async def queue_of(self, host_id: int) -> AsyncIterator[list[QueuedCommand]]:
        """The host's queued commands still within their TTL, oldest first, with the host's
        queue to itself until the block ends: the caller writes them and reports which it
        did (`sent`). Those past their TTL are marked `expired` on the way. An answer that
        comes back before `sent` is kept for it, as during any hand-over."""
        lock, users = self._locks.get(host_id) or (asyncio.Lock(), 0)
        self._locks[host_id] = (lock, users + 1)
        try:
            async with lock:
                queued = await self._take_queue(host_id)
                for command in queued:
                    self._writing_queue[(host_id, command.req_id)] = None
                try:
                    yield queued
                finally:
                    for command in queued:
                        self._writing_queue.pop((host_id, command.req_id), None)
        finally:  # the lock goes once nobody holds or waits for it
            lock, users = self._locks[host_id]
            if users == 1:
                del self._locks[host_id]
            else:
                self._locks[host_id] = (lock, users - 1)

    async def _take_queue(self, host_id: int) -> list[QueuedCommand]:
        await self._leave_queue(
            CommandState.EXPIRED, host_device_id=host_id, expires_at__lte=self._clock()
        )
        rows = (
            await CommandRecord.filter(host_device_id=host_id, state=CommandState.QUEUED)
            .order_by("id")
            .values_list("id", "req_id", "frame", "sender_device_id")
        )
        if not rows:
            self._queued_hosts.discard(host_id)
        return [
            QueuedCommand(int(row_id), host_id, str(req_id), str(frame), sender)
            for row_id, req_id, frame, sender in rows
        ]

    async def sent(self, commands: list[QueuedCommand]) -> None:
        """These queued commands were written to their host (and perhaps answered already)."""
        now = self._clock()
        plain = []
        for command in commands:
            answer = self._writing_queue.pop((command.host_id, command.req_id), None)
            if answer is None:
                plain.append(command.id)
            else:
                await CommandRecord.filter(id=command.id, state=CommandState.QUEUED).update(
                    state=CommandState.ANSWERED, answer=answer, updated_at=now
                )
        if plain:
            await self._leave_queue(CommandState.SENT, id__in=plain)

    async def dropped(self, commands: list[QueuedCommand]) -> None:
        """These queued commands will never be written (their sender left the host)."""
        if commands:
            await self._leave_queue(CommandState.FAILED, id__in=[c.id for c in commands])

    async def host_deleted(self, host_id: int) -> None:
        """Its queued commands fail; the rest of its commands stay visible."""
        self._queued_hosts.discard(host_id)
        await self._leave_queue(CommandState.FAILED, host_device_id=host_id)

    async def _leave_queue(self, state: CommandState, **which: Any) -> None:
        """Move the queued commands `which` selects to `state` (one that left the queue
        meanwhile stays as it is)."""
        await CommandRecord.filter(state=CommandState.QUEUED, **which).update(
            state=state, updated_at=self._clock()
        )

    # --- reading ------------------------------------------------------------------------------
    async def state_of(self, user_id: int, req_id: str) -> dict[str, Any] | None:
        """`GET /commands/{req_id}`: the account's newest command with that id, or None."""
        await self.flush()  # what was relayed before this request is in the answer
        record = await CommandRecord.filter(req_id=req_id, user_id=user_id).order_by("-id").first()
        if record is None:
            return None
        state, updated = record.state, record.updated_at
        if state is CommandState.QUEUED and record.expires_at is not None:
            if record.expires_at <= self._clock():  # expired, not yet marked
                state, updated = CommandState.EXPIRED, record.expires_at
        return {
            "req_id": record.req_id,
            "host_device_id": record.host_device_id,
            "cmd": record.cmd,
            "state": state.value,
            "created_at": record.created_at,
            "updated_at": updated,
            "answer": orjson.Fragment(record.answer) if record.answer is not None else None,
        }
