"""The live sockets of this process: who opened each, with which credential, and how many
each user has open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from simbridge.hub import Connection
from simbridge.limits import TokenBucket
from simbridge.models import DeviceType

USER_TOKEN = "user"
DEVICE_TOKEN = "device"


@dataclass(eq=False, slots=True)
class Session:
    """One open socket. `token_version` is the user token's version (None for a device token)."""

    conn: Connection
    device_id: int
    device_type: DeviceType
    user_id: int
    credential: str
    token_version: int | None
    bucket: TokenBucket = field(repr=False)


class Sessions:
    def __init__(self) -> None:
        self._by_user: dict[int, set[Session]] = {}
        self._count = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    def add(self, session: Session) -> None:
        self._by_user.setdefault(session.user_id, set()).add(session)
        self._count += 1
        self._none_open.clear()

    def remove(self, session: Session) -> None:
        user_sessions = self._by_user.get(session.user_id, set())
        if session in user_sessions:
            user_sessions.discard(session)
            self._count -= 1
            if not user_sessions:
                del self._by_user[session.user_id]
        if not self._count:
            self._none_open.set()

    def others_of_user(self, user_id: int, device_id: int) -> int:
        """How many sockets the user has open for devices other than `device_id`."""
        return sum(1 for s in self._by_user.get(user_id, ()) if s.device_id != device_id)

    def opened_by(self, user_id: int, device_id: int, device_type: DeviceType) -> bool:
        """Whether the user has a socket open for their device `device_id` of this type
        (admission checked both, so no query is needed to know it)."""
        return any(
            s.device_id == device_id and s.device_type is device_type
            for s in self._by_user.get(user_id, ())
        )

    def matching(self, user_id: int, keep: Callable[[Session], bool]) -> Iterator[Session]:
        yield from [s for s in self._by_user.get(user_id, ()) if keep(s)]

    def __len__(self) -> int:
        return self._count

    async def wait_until_none(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._none_open.wait(), timeout)
        except TimeoutError:
            return False
        return True
