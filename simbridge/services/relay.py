"""The routing rules of contract §4: who gets a command or an event, and what the sender hears.

Nothing here touches the database on the way of a message: pairings come from the in-memory
`PairingDirectory`, delivery goes through the broker and the log row is handed to the
write-behind `MessageLogWriter`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from typing import Any

from simbridge import protocol
from simbridge.clock import Clock
from simbridge.errors import HostOffline
from simbridge.hub import Broker, Connection
from simbridge.models import DeviceType, User
from simbridge.protocol import COMMAND, EVENT, PING
from simbridge.services.devices import mark_seen, owned_device
from simbridge.services.directory import PairingDirectory
from simbridge.services.message_log import MessageLogWriter

log = logging.getLogger("simbridge.relay")
MAX_OPEN_REQUESTS = 100_000


class OpenRequests:
    """Which client asked each host for each `req_id`, so the host's answer goes back to it.

    Kept for `ttl_seconds` (a call's CALL_STATE events may follow for minutes) and at most
    `MAX_OPEN_REQUESTS` entries, oldest dropped first.
    """

    def __init__(self, clock: Clock, ttl_seconds: float) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._askers: OrderedDict[tuple[int, Any], tuple[int, float]] = OrderedDict()

    def remember(self, host_id: int, req_id: Any, client_id: int) -> None:
        if not _is_key(req_id):
            return
        now = self._clock().timestamp()
        key = (host_id, req_id)
        self._askers.pop(key, None)
        self._askers[key] = (client_id, now + self._ttl)
        while self._askers and (
            len(self._askers) > MAX_OPEN_REQUESTS or next(iter(self._askers.values()))[1] <= now
        ):
            self._askers.popitem(last=False)

    def asker(self, host_id: int, req_id: Any) -> int | None:
        if not _is_key(req_id):
            return None
        entry = self._askers.get((host_id, req_id))
        if entry is None or entry[1] <= self._clock().timestamp():
            return None
        return entry[0]


def _is_key(req_id: Any) -> bool:
    return isinstance(req_id, (str, int)) and not isinstance(req_id, bool)


def _device_id(value: Any) -> int | None:
    """`to_device_id` as an int, or None when it is not one (JSON `true` is not device 1)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Relay:
    def __init__(
        self,
        broker: Broker,
        directory: PairingDirectory,
        writer: MessageLogWriter,
        clock: Clock,
        correlation_seconds: float,
    ) -> None:
        self.broker = broker
        self.directory = directory
        self.writer = writer
        self._clock = clock
        self._open_requests = OpenRequests(clock, correlation_seconds)
        self._sessions: set[Connection] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    # --- sockets --------------------------------------------------------------------------
    async def connect(self, device_id: int, conn: Connection) -> None:
        """Greet the socket, then make it the device's live connection."""
        self._sessions.add(conn)
        self._all_closed.clear()
        await conn.send(protocol.connected(device_id))
        await self.broker.attach(device_id, conn)
        await mark_seen(device_id, self._clock)

    async def disconnect(self, device_id: int, conn: Connection) -> None:
        """Called once the socket's handler is done with it, whatever ended it.

        Shielded: Sanic cancels the handler when the TCP connection drops, and the device
        must still go offline and get its `last_seen`.
        """
        await asyncio.shield(self._detach(device_id, conn))

    async def _detach(self, device_id: int, conn: Connection) -> None:
        try:
            if await self.broker.detach(device_id, conn):
                await mark_seen(device_id, self._clock)
        finally:
            self._sessions.discard(conn)
            if not self._sessions:
                self._all_closed.set()

    async def shutdown(self, timeout: float) -> None:
        """Close every socket with 1001 and wait (up to `timeout`) for their handlers to end,
        so no frame that was already read is dropped half-way."""
        await self.broker.stop()
        try:
            await asyncio.wait_for(self._all_closed.wait(), timeout)
        except TimeoutError:
            log.warning("%d socket handlers still busy at shutdown", len(self._sessions))

    async def handle(self, sender_id: int, raw: str | bytes) -> str | None:
        """Act on one frame from a device; returns the reply for the sender, if any."""
        try:
            frame = protocol.decode(raw)
        except protocol.InvalidFrame:
            return protocol.INVALID_JSON
        kind = frame.get("type")
        if kind == COMMAND:
            return await self._route_command(sender_id, frame, raw)
        if kind == EVENT:
            return await self._route_event(sender_id, frame, raw)
        if kind == PING:
            return protocol.PONG
        return protocol.UNKNOWN_TYPE

    # --- routing --------------------------------------------------------------------------
    async def _route_command(
        self, sender_id: int, frame: dict[str, Any], raw: str | bytes
    ) -> str | None:
        hosts = await self.directory.hosts_of(sender_id)
        if "to_device_id" in frame:
            target = _device_id(frame["to_device_id"])
            if target is None or target not in hosts:
                return protocol.not_paired(frame["to_device_id"])
        elif hosts:
            target = hosts[0]
        else:
            return protocol.NO_PAIRED_HOST
        text = _as_text(raw)
        if "req_id" not in frame:
            frame["req_id"] = uuid.uuid4().hex
            text = protocol.with_req_id(text, frame["req_id"])
        elif frame["req_id"] is None:
            frame["req_id"] = uuid.uuid4().hex
            text = protocol.encode(frame)
        self._open_requests.remember(target, frame["req_id"], sender_id)
        if not await self._deliver(sender_id, target, COMMAND, text):
            return protocol.target_offline(target, frame["req_id"])
        return None

    async def _route_event(
        self, sender_id: int, frame: dict[str, Any], raw: str | bytes
    ) -> str | None:
        clients = await self.directory.clients_of(sender_id)
        req_id = frame.get("req_id")
        text = _as_text(raw)
        if "to_device_id" in frame:
            target = _device_id(frame["to_device_id"])
            if target is None or target not in clients:
                return protocol.not_paired(frame["to_device_id"])
        else:
            target = self._open_requests.asker(sender_id, req_id)
            if target not in clients:
                return await self._fan_out(sender_id, clients, text, req_id)
        if not await self._deliver(sender_id, target, EVENT, text):
            return protocol.target_offline(target, req_id)
        return None

    async def _fan_out(
        self, sender_id: int, clients: tuple[int, ...], text: str, req_id: Any
    ) -> str | None:
        """An unsolicited event goes to every paired client that is online."""
        if not clients:
            return protocol.NO_PAIRED_CLIENT
        online = await self.broker.online(clients)
        delivered = False
        for client_id in (client for client in clients if client in online):
            delivered = await self._deliver(sender_id, client_id, EVENT, text) or delivered
        return None if delivered else protocol.target_offline(clients[0], req_id)

    async def _deliver(self, sender_id: int | None, target: int, msg_type: str, text: str) -> bool:
        if not await self.broker.deliver(target, text):
            return False
        await self.writer.write(sender_id, target, msg_type, text)
        return True

    # --- REST fallback --------------------------------------------------------------------
    async def send_command(self, user: User, host_id: int, cmd: str, args: dict[str, Any]) -> str:
        """Relay a command from the REST API to the caller's host; returns its `req_id`."""
        await owned_device(user, host_id, DeviceType.HOST)
        req_id = uuid.uuid4().hex
        text = protocol.encode({"type": COMMAND, "cmd": cmd, **args, "req_id": req_id})
        if not await self._deliver(None, host_id, COMMAND, text):
            raise HostOffline()
        return req_id


def _as_text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode()
