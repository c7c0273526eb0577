"""Rate limits: how often a key (a username, an address, a user) may do something.

`Limiter` is the interface a shared store (Redis) can implement for several processes;
`MemoryLimiter` is the in-process default. `TokenBucket` meters the frames of one socket.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from simbridge.clock import Clock

PRUNE_EVERY = 1024


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` events per `seconds`, per key."""

    count: int
    seconds: float


class Limiter(Protocol):
    async def retry_after(self, key: str, limit: Limit) -> int | None:
        """Seconds until `key` may act again, or None if it may act now."""

    async def record(self, key: str, limit: Limit) -> None:
        """Count one event for `key`."""

    async def reset(self, key: str) -> None:
        """Forget every event of `key` (e.g. after a successful login)."""

    async def close(self) -> None:
        """Release connections (at shutdown)."""


class MemoryLimiter:
    """A sliding log per key: the times of its last `count` events, nothing older."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._windows: dict[str, float] = {}
        self._since_prune = 0

    async def retry_after(self, key: str, limit: Limit) -> int | None:
        events = self._events.get(key)
        if events is None or len(events) < limit.count:
            return None
        wait = events[0] + limit.seconds - self._now()
        return math.ceil(wait) if wait > 0 else None

    async def record(self, key: str, limit: Limit) -> None:
        events = self._events.setdefault(key, deque(maxlen=limit.count))
        events.append(self._now())
        self._windows[key] = limit.seconds
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._prune()

    async def reset(self, key: str) -> None:
        self._events.pop(key, None)
        self._windows.pop(key, None)

    async def close(self) -> None:
        return None

    def _now(self) -> float:
        return self._clock().timestamp()

    def _prune(self) -> None:
        """Drop keys whose newest event has left its window, so memory stays bounded."""
        now = self._now()
        stale = [k for k, events in self._events.items() if events[-1] + self._windows[k] <= now]
        for key in stale:
            del self._events[key]
            del self._windows[key]
        self._since_prune = 0


class TokenBucket:
    """`rate` tokens a second, up to `burst` saved; each frame takes one."""

    __slots__ = ("_rate", "_burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def is_full(self) -> bool:
        elapsed = time.monotonic() - self._last
        return self._tokens + elapsed * self._rate >= self._burst

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
