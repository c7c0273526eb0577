"""The routing rules of contract §4: who gets a command or an event, and what the sender hears.

Nothing here touches the database on the way of a message: pairings come from the in-memory
`PairingDirectory`, delivery goes through the broker, seqs come from `Sequences` and the log row
(the inbox too, see `simbridge.services.inbox`) is handed to the write-behind `MessageLogWriter`.
With several processes (`SIMBRIDGE_BROKER=redis`) seqs and kept frames come from
`RedisInboxes` instead, and a kept frame takes its seq, is kept and is routed in one Redis call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any

import orjson

from simbridge import protocol
from simbridge.config import Settings
from simbridge.errors import HostOffline
from simbridge.hub import Broker, Connection, Hub, Session
from simbridge.hub.base import close_quietly
from simbridge.hub.broker import BrokerUnavailable
from simbridge.hub.control import CommandsQueued, WaitedAnswer
from simbridge.hub.open_requests import Asked
from simbridge.limits import TokenBucket
from simbridge.metrics import LATENCY_SAMPLE_EVERY, Counts
from simbridge.models import DeviceType, User
from simbridge.protocol import CLOSE_REMOVED, COMMAND, EVENT, PING
from simbridge.services.answers import Answers
from simbridge.services.commands import (
    FAIL,
    Commands,
    OfflinePolicy,
    QueuedCommand,
    cmd_of,
    policy_of,
    req_key,
)
from simbridge.services.devices import owned_device
from simbridge.services.directory import PairingDirectory
from simbridge.services.last_seen import LastSeenWriter
from simbridge.services.message_log import MessageLogWriter
from simbridge.services.presence import Presence
from simbridge.services.redis_inboxes import RedisInboxes
from simbridge.services.replay import go_live, replay_inbox, replay_kept
from simbridge.services.sequences import Sequences
from simbridge.services.webhook_delivery import Webhooks

log = logging.getLogger("simbridge.relay")
# The asker remembered for a REST command whose caller waits: its answers go to every client,
# as a REST command's do, and to the waiting caller, wherever it is (`WaitedAnswer`).
REST_CALLER = -2
CLOSE_TRY_AGAIN = 1013  # a `since` socket whose replay cannot be read now (Redis is away)


def _device_id(value: Any) -> int | None:
    """`to_device_id` as an int, or None when it is not one (JSON `true` is not device 1)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a REST command's caller hears: `sent`, `queued`, or `answered` with the event."""

    status: str
    req_id: str
    answer: str | None = None


class Relay:
    """Sessions and routing. Sockets of this process are served by the `hub` directly; a
    device held by another process is reached through the `broker`."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        directory: PairingDirectory,
        writer: MessageLogWriter,
        settings: Settings,
        last_seen: LastSeenWriter,
        sequences: Sequences | None,
        commands: Commands,
        inboxes: RedisInboxes | None = None,
        counts: Counts | None = None,
        webhooks: Webhooks | None = None,
    ) -> None:
        """Frames are kept (contract §6) with `sequences` in one process (memory broker), with
        `inboxes` across processes (Redis broker); one of them at most is given. `counts` are
        the metrics' (plain ints, bumped here without a lock)."""
        self._hub = hub
        self._broker = broker
        self._directory = directory
        self._writer = writer
        self._settings = settings
        self._last_seen = last_seen
        self._sequences = sequences
        self._commands = commands
        self._inboxes = inboxes
        self._counts = counts = Counts() if counts is None else counts
        self._relayed = counts.relayed  # msg_type -> frames handed to a recipient
        self._errors = counts.errors  # error -> error replies
        self._answers = Answers()
        # Accounts with webhooks (contract §9): one dict lookup per event frame of a host
        self._webhook_users = webhooks.users if webhooks is not None else {}
        self._webhooks = webhooks
        self._presence = Presence(hub, broker, directory)
        self._buckets: dict[int, TokenBucket] = {}  # per device: reconnecting does not refill

    # --- sockets --------------------------------------------------------------------------
    def open_session(
        self,
        conn: Connection,
        device_id: int,
        device_type: DeviceType,
        user_id: int,
        token_version: int | None,
        device_token_digest: str | None,
        since: int | None = None,
    ) -> Session:
        """Count a new socket in; whatever happens next, `disconnect` must follow. `since` is
        the position a v2 socket asked to be replayed from (None: a v1 socket)."""
        session = Session(
            conn=conn,
            device_id=device_id,
            device_type=device_type,
            user_id=user_id,
            token_version=token_version,
            bucket=self._bucket_of(device_id),
            device_token_digest=device_token_digest,
            since=since,
        )
        self._hub.open(session)
        return session

    def _bucket_of(self, device_id: int) -> TokenBucket:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            settings = self._settings
            bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_message_burst)
            self._buckets[device_id] = bucket
        return bucket

    async def connect(self, session: Session) -> None:
        """Greet the socket, then make it the device's live connection, here and everywhere. A
        `since` socket is attached first, and replayed (`replay_inbox`) before live frames; a
        host's queued commands follow the greeting (and replay), before live frames."""
        device_id = session.device_id
        queued_before = self._commands.queued_count(device_id)
        claimed = False
        if session.device_type is DeviceType.HOST and self._commands.has_queued(device_id):
            claimed = await self._start_with_queue(session)
        elif self._inboxes is not None and session.since is not None:
            if not await self._replay_kept(session, self._inboxes):
                return
            claimed = True
        elif (sequences := self._sequences_for(session)) is not None:
            await self._replay(session, sequences)
        else:
            await session.conn.send(protocol.connected(device_id))
            await self._hub.attach(session)
        if self._inboxes is not None and self._hub.session_of(device_id) is not session:
            return  # closed meanwhile: replaced, or its replay could not be read
        if self._commands.queued_count(device_id) != queued_before:  # queued as it connected
            await self._send_queue(device_id)
        if not claimed:
            await self._claim(session)
        self._last_seen.note(session.device_id)
        await self._presence.announce(session, online=True)

    async def _claim(self, session: Session) -> None:
        try:
            await self._broker.claim(session.device_id)
        except BrokerUnavailable:  # Redis went away since admission: the broker claims it later
            log.warning("device %s connected while the broker is unavailable", session.device_id)

    async def _replay_kept(
        self,
        session: Session,
        inboxes: RedisInboxes,
        queued: list[tuple[int | None, str]] | None = None,
    ) -> bool:
        """Start a `since` socket across processes (`replay_kept`: it is claimed there); False,
        with the socket closed (1013, try again later), when Redis cannot be reached: what it
        missed cannot be read."""
        try:
            await replay_kept(
                session,
                self._hub,
                partial(self._broker.claim, session.device_id),
                inboxes,
                self._writer,
                self._presence_of(session),
                queued or (),
            )
        except BrokerUnavailable:
            log.warning("device %s: no replay while the broker is unavailable", session.device_id)
            code, reason = CLOSE_TRY_AGAIN, "broker unavailable"
        except LookupError:  # deleted while it connected
            code, reason = CLOSE_REMOVED, "device removed"
        else:
            return True
        self._hub.detach(session)
        session.held = None
        await close_quietly(session.conn, code, reason)
        return False

    async def _replay(
        self,
        session: Session,
        sequences: Sequences,
        queued: list[tuple[int | None, str]] | None = None,
    ) -> None:
        """Start a `since` socket in one process (`replay_inbox`)."""
        presence = self._presence_of(session)
        await replay_inbox(
            session, self._hub, sequences, self._writer, self._settings, presence, queued or ()
        )

    def _sequences_for(self, session: Session) -> Sequences | None:
        """The seqs to replay a `since` socket with; None for a v1 socket (or none kept)."""
        return None if session.since is None else self._sequences

    def _presence_of(self, session: Session) -> Callable[[], Awaitable[list[str]]]:
        async def presence() -> list[str]:
            return await self._presence.of_peers(session)

        return presence

    async def _start_with_queue(self, session: Session) -> bool:
        """Start a host's socket that has commands waiting: they follow the greeting (and, on a
        `since` socket, the replay), oldest first, before any live frame. True if the socket
        was claimed (a `since` socket across processes)."""
        host_id = session.device_id
        async with self._commands.queue_of(host_id) as queued:
            commands = await self._still_wanted(host_id, queued)
            for command in commands:
                asked = _asked(command)
                if asked is not None:
                    self._hub.remember_request(host_id, *asked)
            if self._inboxes is not None and session.since is not None:
                started = False
                try:
                    frames = [(c.sender_id, c.frame) for c in commands]
                    started = await self._replay_kept(session, self._inboxes, frames)
                finally:
                    await self._commands.sent(commands if started else [])
                return started
            sequences = self._sequences_for(session)
            if sequences is not None:
                try:  # numbered and logged when the replay starts: kept in its inbox
                    await self._replay(
                        session, sequences, [(c.sender_id, c.frame) for c in commands]
                    )
                finally:
                    await self._commands.sent(commands)
                return False
            # kept, if frames are
            numbers = await self._numbers_for(host_id, [c.frame for c in commands])
            session.held = []  # live frames wait for the queued ones
            await session.conn.send(protocol.connected(host_id))
            await self._hub.attach(session)
            written: list[QueuedCommand] = []
            try:
                for command, seq in zip(commands, numbers, strict=True):
                    await session.conn.send(command.frame)
                    written.append(command)
                    self._relayed[COMMAND] += 1
                    await self._writer.write(
                        command.sender_id, host_id, COMMAND, command.frame, seq
                    )
            finally:
                await self._commands.sent(written)
            await go_live(session)
        return False

    async def _numbers_for(self, device_id: int, frames: list[str]) -> list[int | None]:
        """The next seqs of the device, one per frame (kept), or Nones when frames are not
        kept."""
        count = len(frames)
        if self._inboxes is not None and count:
            try:
                return list((await self._inboxes.open(device_id, None, frames)).numbered)
            except (BrokerUnavailable, LookupError):
                return [None] * count
        keeping = self._sequences
        if keeping is None or not count or not await keeping.ready(device_id, count):
            return [None] * count
        return [keeping.take(device_id) for _ in range(count)]

    async def _send_queue(self, host_id: int) -> None:
        """Hand the host (live now) its queued commands, as live frames: those queued while it
        was connecting."""
        async with self._commands.queue_of(host_id) as queued:
            written: list[QueuedCommand] = []
            try:
                for command in await self._still_wanted(host_id, queued):
                    if not await self._deliver(
                        command.sender_id, host_id, COMMAND, command.frame, _asked(command)
                    ):
                        break
                    written.append(command)
            finally:
                await self._commands.sent(written)

    async def _still_wanted(self, host_id: int, queued: list[QueuedCommand]) -> list[QueuedCommand]:
        """The queued commands whose sender is still paired with the host; the others fail."""
        wanted: list[QueuedCommand] = []
        dropped: list[QueuedCommand] = []
        for command in queued:
            sender = command.sender_id
            paired = sender is None or host_id in await self._directory.hosts_of(sender)
            (wanted if paired else dropped).append(command)
        await self._commands.dropped(dropped)
        return wanted

    async def disconnect(self, session: Session) -> None:
        """Called once the socket's handler is done with it, whatever ended it.

        Shielded: Sanic cancels the handler when the TCP connection drops, and the device
        must still go offline and get its `last_seen`.
        """
        await asyncio.shield(self._detach(session))

    async def _detach(self, session: Session) -> None:
        try:
            if self._hub.detach(session):
                await self._broker.release(session.device_id)
                self._last_seen.note(session.device_id)
                await self._presence.announce(session, online=False)
        finally:
            self._hub.close(session)
            if session.bucket.is_full():  # as good as new: no need to remember it
                self._buckets.pop(session.device_id, None)

    async def handle(self, session: Session, raw: str | bytes) -> str | None:
        """Act on one frame from a device; returns the reply for the sender, if any.

        One command or event in `LATENCY_SAMPLE_EVERY` is timed for the latency histogram;
        the others cost a countdown."""
        if not session.bucket.take():  # every frame counts, well-formed or not
            self._errors["rate_limited"] += 1
            return protocol.rate_limited(protocol.req_id_of(raw))
        try:
            frame = protocol.decode(raw, self._settings.max_json_depth)
        except protocol.InvalidFrame:
            self._errors["invalid_json"] += 1
            return protocol.INVALID_JSON
        except protocol.TooDeep:
            self._errors["too_deep"] += 1
            return protocol.too_deep(self._settings.max_json_depth)
        kind = frame.get("type")
        if kind == COMMAND or kind == EVENT:
            if kind == EVENT and session.user_id in self._webhook_users:
                if session.device_type is DeviceType.HOST and self._webhooks is not None:
                    self._webhooks.offer(session.user_id, session.device_id, frame)
            routing = (
                self._route_command(session, frame, raw)
                if kind == COMMAND
                else self._route_event(session.device_id, frame, raw)
            )
            counts = self._counts
            counts.latency_countdown -= 1
            if counts.latency_countdown:
                return await routing
            counts.latency_countdown = LATENCY_SAMPLE_EVERY
            started = perf_counter()
            reply = await routing
            if reply is None:  # relayed: the time it took is the relay's latency
                counts.observe_latency(perf_counter() - started)
            return reply
        if kind == PING:
            return protocol.PONG
        self._errors["unknown_type"] += 1
        return protocol.UNKNOWN_TYPE

    def internal_error(self) -> str:
        """The reply to a frame whose handling failed (a bug of ours), counted."""
        self._errors["internal_error"] += 1
        return protocol.INTERNAL_ERROR

    # --- routing --------------------------------------------------------------------------
    async def _route_command(
        self, session: Session, frame: dict[str, Any], raw: str | bytes
    ) -> str | None:
        policy = policy_of(frame)
        if policy is None:
            self._errors["invalid_offline_policy"] += 1
            return protocol.INVALID_OFFLINE_POLICY
        sender_id = session.device_id
        hosts = await self._directory.hosts_of(sender_id)
        if "to_device_id" in frame:
            target = _device_id(frame["to_device_id"])
            if target is None or target not in hosts:
                self._errors["not_paired"] += 1
                return protocol.not_paired(
                    protocol.exact(raw, "to_device_id", frame["to_device_id"])
                )
        elif hosts:
            target = hosts[0]
        else:
            self._errors["no_paired_host"] += 1
            return protocol.NO_PAIRED_HOST
        text = _as_text(raw)
        if "req_id" not in frame:
            frame["req_id"] = req_id = uuid.uuid4().hex
            text = protocol.with_req_id(text, req_id)
        elif frame["req_id"] is None:
            frame["req_id"] = req_id = uuid.uuid4().hex
            text = protocol.with_new_req_id(text, req_id)
        asked = Asked(frame["req_id"], sender_id)
        key = req_key(frame["req_id"])
        if key is None:  # relayed without a state: it cannot be asked about, nor queued
            if policy.queue:
                self._errors["invalid_offline_policy"] += 1
                return protocol.INVALID_OFFLINE_POLICY
            if await self._deliver(sender_id, target, COMMAND, text, asked):
                return None
            return self._offline(target, frame, raw)
        self._commands.handing_over(key, session.user_id, target, sender_id, cmd_of(frame))
        if await self._deliver(sender_id, target, COMMAND, text, asked):
            return None
        if policy.queue:
            await self._queue(target, key, text, policy)
            return protocol.queued(protocol.exact(raw, "req_id", frame["req_id"]), target)
        await self._commands.refused(target, key)
        return self._offline(target, frame, raw)

    async def _queue(self, host_id: int, req_id: str, text: str, policy: OfflinePolicy) -> None:
        """Keep a command refused as offline for its host's next connect, and tell every
        process (`commands_queued`): the host may be connecting to any of them."""
        await self._commands.queue(host_id, req_id, text, policy.ttl_seconds)
        await self._broker.broadcast(CommandsQueued(host_id))

    async def commands_queued(self, host_id: int) -> None:
        """A command was queued for the host somewhere: write it now if the host connected
        here meanwhile, else when it connects."""
        self._commands.note_queued(host_id)
        if self._hub.holds(host_id):
            await self._send_queue(host_id)

    def answer_waiters(self, host_id: int, req_id: str, event: str) -> None:
        """The host answered a REST command: its caller may be waiting here."""
        self._answers.answer(host_id, req_id, event)

    async def _route_event(
        self, sender_id: int, frame: dict[str, Any], raw: str | bytes
    ) -> str | None:
        clients = await self._directory.clients_of(sender_id)
        text = _as_text(raw)
        addressed = "to_device_id" in frame
        target = _device_id(frame["to_device_id"]) if addressed else None
        if addressed and (target is None or target not in clients):
            self._errors["not_paired"] += 1
            return protocol.not_paired(protocol.exact(raw, "to_device_id", frame["to_device_id"]))
        key = req_key(frame.get("req_id"))
        if key is not None and clients:  # perhaps the answer to a command: its state says so
            self._answers.answer(sender_id, key, text)
            self._commands.answered(sender_id, key, text)
        if target is None:
            target = self._hub.asker(sender_id, frame.get("req_id"))
            if target == REST_CALLER and key is not None:  # who waits may be in another process
                await self._broker.broadcast(WaitedAnswer(sender_id, key, text))
            if target is None or target not in clients:
                if not clients:
                    self._errors["no_paired_client"] += 1
                    return protocol.NO_PAIRED_CLIENT
                if await self._fan_out(sender_id, clients, text):
                    return None
                return self._offline(clients[0], frame, raw)
        if not await self._deliver(sender_id, target, EVENT, text):
            return self._offline(target, frame, raw)
        return None

    def _offline(self, target: int, frame: dict[str, Any], raw: str | bytes) -> str:
        self._errors["target_offline"] += 1
        return _offline(target, frame, raw)

    async def _fan_out(self, sender_id: int, clients: tuple[int, ...], text: str) -> bool:
        """An unsolicited event goes to every paired client that is online, and is kept for
        every one, online or not, when frames are kept; True if any got it now."""
        if self._sequences is not None or self._inboxes is not None:
            targets = list(clients)
        else:
            online = self._hub.online(clients)
            if len(online) < len(clients):
                elsewhere = [client for client in clients if client not in online]
                online |= await self._broker.online(elsewhere)
            targets = [client for client in clients if client in online]
        if len(targets) == 1:  # the common case, without a task per delivery
            return await self._deliver(sender_id, targets[0], EVENT, text)
        # Concurrently: one client that stopped reading must not hold up the others.
        results = await asyncio.gather(
            *(self._deliver(sender_id, client, EVENT, text) for client in targets)
        )
        return any(results)

    async def _deliver(
        self,
        sender_id: int | None,
        target: int,
        msg_type: str,
        text: str,
        asked: Asked | None = None,
    ) -> bool:
        """To the target's socket here, or through the broker if another process holds it; a
        command's asker is remembered by the process that holds the host.

        When frames are kept (contract §6), a frame for a socket here takes the target's next
        seq, and so does an event for an offline client: it is kept for it. A command is kept
        only once written to its host (one refused as offline would be sent again later,
        after its sender had retried it)."""
        if self._inboxes is not None:
            return await self._deliver_kept(self._inboxes, sender_id, target, msg_type, text, asked)
        sequences = self._sequences
        if sequences is None or sequences.has_ready(target):  # the common case: no coroutine
            keeping = sequences
        else:
            keeping = await self._keeping_for(target)
        seq = None
        if self._hub.holds(target):  # nothing awaited since `ready`: see `Sequences.ready`
            if asked is not None:
                self._hub.remember_request(target, *asked)
            if keeping is not None:
                seq = keeping.take(target)
            delivered = await self._hub.send(target, text, seq)
        elif keeping is not None and msg_type == EVENT:  # kept for the client, who is offline
            seq = keeping.take(target)
            delivered = False
        else:
            delivered = await self._broker.deliver(target, text, asked)
        if delivered or (seq is not None and msg_type == EVENT):
            if delivered:
                self._relayed[msg_type] += 1
            if not self._writer.write_nowait(sender_id, target, msg_type, text, seq):
                await self._writer.write(sender_id, target, msg_type, text, seq)
        return delivered

    async def _deliver_kept(
        self,
        inboxes: RedisInboxes,
        sender_id: int | None,
        target: int,
        msg_type: str,
        text: str,
        asked: Asked | None,
    ) -> bool:
        """`_deliver` across processes: one Redis call gives the frame its seq, keeps it and
        publishes it to the node that owns the target (this one included, for a `since`
        socket here: then every frame of the device reaches it through Redis, in seq order). A
        v1 socket here is sent the frame directly, unless another node owns the device now.
        While Redis cannot be reached, only sockets here get frames, without a seq."""
        session = self._hub.session_of(target)
        here = session is not None and session.since is None
        try:
            kept = await inboxes.keep(target, text, asked, event=msg_type == EVENT, here=here)
        except (BrokerUnavailable, LookupError):
            return await self._deliver_unkept(sender_id, target, msg_type, text, asked)
        if kept.here:
            delivered = await self._send_here(target, text, asked, kept.seq)
        else:
            delivered = kept.receivers > 0
        if delivered or (kept.seq is not None and msg_type == EVENT):
            if delivered:
                self._relayed[msg_type] += 1
            if not self._writer.write_nowait(sender_id, target, msg_type, text, kept.seq):
                await self._writer.write(sender_id, target, msg_type, text, kept.seq)
        return delivered

    async def _deliver_unkept(
        self,
        sender_id: int | None,
        target: int,
        msg_type: str,
        text: str,
        asked: Asked | None,
    ) -> bool:
        """A frame that could not be kept: to a socket here, else as v1 through the broker."""
        if self._hub.holds(target):
            delivered = await self._send_here(target, text, asked, None)
        else:
            delivered = await self._broker.deliver(target, text, asked)
        if delivered:
            self._relayed[msg_type] += 1
            if not self._writer.write_nowait(sender_id, target, msg_type, text, None):
                await self._writer.write(sender_id, target, msg_type, text, None)
        return delivered

    async def _send_here(
        self, target: int, text: str, asked: Asked | None, seq: int | None
    ) -> bool:
        if asked is not None and self._hub.holds(target):
            self._hub.remember_request(target, *asked)
        return await self._hub.send(target, text, seq)

    async def _keeping_for(self, target: int) -> Sequences | None:
        """The seqs to keep frames for `target` with, ready to be taken; None when frames are
        not kept (or the device is gone)."""
        sequences = self._sequences
        if sequences is None or not await sequences.ready(target):
            return None
        return sequences

    # --- REST fallback --------------------------------------------------------------------
    async def send_command(
        self,
        user: User,
        host_id: int,
        cmd: str,
        args: dict[str, Any],
        policy: OfflinePolicy = FAIL,
        wait_seconds: float = 0,
    ) -> CommandReply:
        """Relay a command from the REST API to the caller's host, and wait up to
        `wait_seconds` for its answer.

        A host with a socket open here was checked when it connected; any other is looked up
        (to answer 404 or 403 before 503).
        """
        if not self._hub.opened_by(user.id, host_id, DeviceType.HOST):
            await owned_device(user, host_id, DeviceType.HOST)
        req_id = uuid.uuid4().hex
        text = protocol.encode({"type": COMMAND, "cmd": cmd, **args, "req_id": req_id})
        answer = self._answers.expect(host_id, req_id) if wait_seconds > 0 else None
        try:
            self._commands.handing_over(req_id, user.id, host_id, None, cmd)
            asked = Asked(req_id, REST_CALLER) if answer is not None else None
            delivered = await self._deliver(None, host_id, COMMAND, text, asked)
            if not delivered and policy.queue:
                await self._queue(host_id, req_id, text, policy)
            elif not delivered:
                await self._commands.refused(host_id, req_id)
                raise HostOffline()
            status = "sent" if delivered else "queued"
        except BaseException:
            if answer is not None:
                self._answers.forget(host_id, req_id, answer)
            raise
        if answer is None:
            return CommandReply(status, req_id)
        event = await self._answers.wait(host_id, req_id, answer, wait_seconds)
        return CommandReply(status if event is None else "answered", req_id, event)


def _asked(command: QueuedCommand) -> Asked | None:
    """Who to send the answers of a queued command to: the client that queued it."""
    if command.sender_id is None:
        return None
    return Asked(orjson.loads(command.frame)["req_id"], command.sender_id)


def _offline(target: int, frame: dict[str, Any], raw: str | bytes) -> str:
    return protocol.target_offline(target, protocol.exact(raw, "req_id", frame.get("req_id")))


def _as_text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode()
