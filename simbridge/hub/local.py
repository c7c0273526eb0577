"""The sockets of this process: the one registry of who is connected here, how to hand each a
frame, and who asked each host here for each request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from simbridge.hub.base import close_all, close_quietly
from simbridge.hub.open_requests import OpenRequests
from simbridge.hub.session import Session
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_REPLACED, CLOSE_TOO_SLOW, with_seq

log = logging.getLogger("simbridge.hub")


class Hub:
    """Every open session of this process, by user, and the live one of each device.

    A session is open from its handshake until its handler ends (`open` .. `close`); it is
    the device's live one from `attach` until `detach` or until a newer socket of the device
    replaces it. A send that takes longer than `send_timeout` (a peer that stopped reading)
    aborts that socket, so a slow consumer can never stall the device sending to it.

    The askers of the requests of a host are kept where its socket is: a command is handed to
    the host here (by this process, or by the broker for a client elsewhere), so its answers,
    which come from that same socket, find them without leaving this process.
    """

    def __init__(
        self, send_timeout: float, max_sockets_per_user: int, open_requests: OpenRequests
    ) -> None:
        self._send_timeout = send_timeout
        self._open_requests = open_requests
        self._max_sockets_per_user = max_sockets_per_user
        self._live: dict[int, Session] = {}
        self._live_since: set[int] = set()  # devices whose live session is a `since` socket
        self._by_user: dict[int, set[Session]] = {}
        self._count = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    # --- sessions ------------------------------------------------------------------------
    def has_room(self, user_id: int, device_id: int) -> bool:
        """Whether the user may open one more socket (replacing a device's own does not count)."""
        others = sum(1 for s in self._by_user.get(user_id, ()) if s.device_id != device_id)
        return others < self._max_sockets_per_user

    def open(self, session: Session) -> None:
        self._by_user.setdefault(session.user_id, set()).add(session)
        self._count += 1
        self._none_open.clear()

    def close(self, session: Session) -> None:
        """The session's handler is done with it (after `detach`)."""
        user_sessions = self._by_user.get(session.user_id, set())
        if session in user_sessions:
            user_sessions.discard(session)
            self._count -= 1
            if not user_sessions:
                del self._by_user[session.user_id]
        if not self._count:
            self._none_open.set()

    async def attach(self, session: Session) -> None:
        """Make `session` its device's live one; a previous socket here is closed with 4000."""
        previous = self._live.get(session.device_id)
        self._live[session.device_id] = session
        if session.since is not None:
            self._live_since.add(session.device_id)
        else:
            self._live_since.discard(session.device_id)
        if previous is not None and previous is not session:
            await close_quietly(previous.conn, CLOSE_REPLACED, "replaced")

    def detach(self, session: Session) -> bool:
        """Stop routing to `session`; False if it was not (or no longer) the device's live one."""
        if self._live.get(session.device_id) is not session:
            return False
        del self._live[session.device_id]
        self._live_since.discard(session.device_id)
        return True

    def session_of(self, device_id: int) -> Session | None:
        """The device's live session here, if it has one."""
        return self._live.get(device_id)

    def any_since(self) -> bool:
        """Whether some live session here is a `since` socket (only those hear presence)."""
        return bool(self._live_since)

    def holds(self, device_id: int) -> bool:
        return device_id in self._live

    def online(self, device_ids: Iterable[int]) -> set[int]:
        return {device_id for device_id in device_ids if device_id in self._live}

    def opened_by(self, user_id: int, device_id: int, device_type: DeviceType) -> bool:
        """Whether the user's device `device_id` of this type is live here (admission checked
        both when the socket opened, so no query is needed to know it)."""
        session = self._live.get(device_id)
        return (
            session is not None
            and session.user_id == user_id
            and session.device_type is device_type
        )

    def sessions_of(self, user_id: int) -> list[Session]:
        return list(self._by_user.get(user_id, ()))

    def sessions(self) -> list[Session]:
        """Every open session of this process."""
        return [s for user_sessions in self._by_user.values() for s in user_sessions]

    def open_by_type(self) -> dict[str, int]:
        """How many sessions are open here, by device type (for the metrics, at scrape time)."""
        counts: dict[str, int] = {}
        for user_sessions in self._by_user.values():
            for session in user_sessions:
                kind = session.device_type.value
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def __len__(self) -> int:
        return self._count

    # --- correlation ---------------------------------------------------------------------
    def remember_request(self, host_id: int, req_id: Any, client_id: int) -> None:
        """`client_id` sent the host a command with `req_id`: its answers go back to it."""
        self._open_requests.remember(host_id, req_id, client_id)

    def asker(self, host_id: int, req_id: Any) -> int | None:
        """The client that sent the host `req_id`, or None if unknown, expired or ambiguous."""
        return self._open_requests.asker(host_id, req_id)

    # --- sending -------------------------------------------------------------------------
    def offer(self, device_id: int, frame: str, seq: int | None = None) -> bool:
        """`send` without waiting: False only when the device's socket cannot take the frame
        at once (then `send` it); True when it was sent, held (see `send`) or has no socket."""
        session = self.session_of(device_id)
        if session is None:
            return True
        if session.since is not None and seq is not None:
            frame = with_seq(frame, seq)
        if session.held is not None:
            session.held.append((seq, frame))
            return True
        return session.conn.send_now(frame)

    async def send(self, device_id: int, frame: str, seq: int | None = None) -> bool:
        """Hand `frame` to the device's live socket here; False if it has none (or it failed).

        A `since` socket gets the frame with its `seq`, and while it is being replayed the
        frame waits in its session (`Session.held`), to follow the replay."""
        session = self._live.get(device_id)
        if session is None:
            return False
        if session.since is not None and seq is not None:
            frame = with_seq(frame, seq)
        if session.held is not None:
            session.held.append((seq, frame))
            return True
        conn = session.conn
        if conn.send_now(frame):  # the common case: no timer, no lock, no task switch
            return True
        try:
            async with asyncio.timeout(self._send_timeout):
                await conn.send(frame)
        except TimeoutError:
            log.warning("device %s stopped reading; closing its socket", device_id)
            self.detach(session)
            conn.abort(CLOSE_TOO_SLOW, "too slow")
            return False
        except Exception:  # the socket closed under us: that is offline, not an error
            self.detach(session)
            return False
        return True

    # --- closing -------------------------------------------------------------------------
    async def close_matching(self, sessions: list[Session], code: int, reason: str) -> None:
        """Stop routing to these sessions and close their sockets, all at once."""
        for session in sessions:
            self.detach(session)
        await close_all((session.conn for session in sessions), code, reason)

    async def close_every(self, code: int, reason: str) -> None:
        """Close every open socket of this process (at shutdown)."""
        await self.close_matching(self.sessions(), code, reason)

    async def wait_until_none(self, timeout: float) -> bool:
        """Wait for every session's handler to end; False if some are still busy."""
        try:
            await asyncio.wait_for(self._none_open.wait(), timeout)
        except TimeoutError:
            return False
        return True
