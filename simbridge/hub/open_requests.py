"""Which client asked a host for each `req_id`, so the host's answers go back to it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from simbridge.clock import Clock

PER_HOST = 1024  # open requests remembered per host, oldest forgotten first
MAX_REQ_ID_LENGTH = 128  # longer ids are relayed but not correlated
AMBIGUOUS = -1  # two clients asked the same host with the same req_id: answer both


class Asked(NamedTuple):
    """A command's `req_id` and the client that sent it, carried with the command to the
    process that holds the host."""

    req_id: Any
    client_id: int


class OpenRequests:
    """The asker of each (host, `req_id`), for `ttl_seconds` (a call's CALL_STATE events may
    follow for minutes).

    Bounded per host, so one client flooding its host with ids cannot push out another
    host's correlations or grow memory without limit. When two clients of a host use the
    same id (phone apps often count from 1), nobody can tell whose answer it is: it then
    goes to every online client, as an unsolicited event would.
    """

    def __init__(self, clock: Clock, ttl_seconds: float) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._by_host: dict[int, OrderedDict[Any, tuple[int, float]]] = {}

    def remember(self, host_id: int, req_id: Any, client_id: int) -> None:
        if not _is_key(req_id):
            return
        now = self._clock().timestamp()
        askers = self._by_host.setdefault(host_id, OrderedDict())
        previous = askers.pop(req_id, None)
        if previous is not None and previous[1] > now and previous[0] != client_id:
            client_id = AMBIGUOUS
        askers[req_id] = (client_id, now + self._ttl)
        while askers and (len(askers) > PER_HOST or next(iter(askers.values()))[1] <= now):
            askers.popitem(last=False)

    def asker(self, host_id: int, req_id: Any) -> int | None:
        """The client that asked, or None if unknown, expired or ambiguous."""
        if not _is_key(req_id):
            return None
        entry = self._by_host.get(host_id, {}).get(req_id)
        if entry is None or entry[1] <= self._clock().timestamp() or entry[0] == AMBIGUOUS:
            return None
        return entry[0]


def _is_key(req_id: Any) -> bool:
    if isinstance(req_id, str):
        return len(req_id) <= MAX_REQ_ID_LENGTH
    return isinstance(req_id, int) and not isinstance(req_id, bool)
