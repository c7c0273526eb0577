"""The rate limits of several processes, kept in Redis so that a brute-force attempt spread
over every process still meets one limit (the `Limiter` interface of `simbridge.limits`).

Each key is a list of its last `count` event times (the sliding log of `MemoryLimiter`), with
an expiry of its window. Times come from the server's clock, so every process must keep its
clock in time (NTP), as the tokens' expiry already requires. While Redis cannot be reached the
limits are kept in this process instead: weaker (per process), never absent.
"""

from __future__ import annotations

import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from simbridge.clock import Clock
from simbridge.limits import Limit, MemoryLimiter

log = logging.getLogger("simbridge.limits")
COMMAND_TIMEOUT_SECONDS = 2.0

# KEYS: the log. ARGV: now, count, window in ms. Appends, keeps the last `count`, expires.
RECORD = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


class RedisLimiter:
    def __init__(self, url: str, prefix: str, clock: Clock) -> None:
        self._redis = Redis.from_url(
            url,
            protocol=2,
            decode_responses=True,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            socket_connect_timeout=COMMAND_TIMEOUT_SECONDS,
        )
        self._record = self._redis.register_script(RECORD)
        self._prefix = f"{prefix}rl:"
        self._clock = clock
        self._fallback = MemoryLimiter(clock)

    async def retry_after(self, key: str, limit: Limit) -> int | None:
        try:
            events = await self._redis.lrange(self._prefix + key, 0, -1)
        except (RedisError, OSError) as exc:
            _unreachable(exc)
            return await self._fallback.retry_after(key, limit)
        if len(events) < limit.count:
            return None
        wait = float(events[-limit.count]) + limit.seconds - self._now()
        return math.ceil(wait) if wait > 0 else None

    async def record(self, key: str, limit: Limit) -> None:
        await self._fallback.record(key, limit)  # counted here too, for an outage to come
        arguments = [self._now(), limit.count, math.ceil(limit.seconds * 1000)]
        try:
            await self._record(keys=[self._prefix + key], args=arguments)
        except (RedisError, OSError) as exc:
            _unreachable(exc)

    async def reset(self, key: str) -> None:
        await self._fallback.reset(key)
        try:
            await self._redis.delete(self._prefix + key)
        except (RedisError, OSError) as exc:
            _unreachable(exc)

    async def close(self) -> None:
        await self._redis.aclose()

    def _now(self) -> float:
        return self._clock().timestamp()


def _unreachable(exc: Exception) -> None:
    log.warning("rate limits kept in this process only: Redis cannot be reached (%s)", exc)
