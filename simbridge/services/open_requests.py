"""Which client asked a host for each `req_id`, so the host's answers go back to it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from simbridge.clock import Clock

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
