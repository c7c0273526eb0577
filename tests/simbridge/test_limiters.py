"""What every `Limiter` promises (the in-process one and the Redis one), and that the Redis one
is one limit for every process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from simbridge.clock import ManualClock
from simbridge.limits import Limit, Limiter, MemoryLimiter
from simbridge.redis_limiter import RedisLimiter
from tests.redis_server import REDIS_URL, private_redis, redis_backend

THREE_PER_MINUTE = Limit(count=3, seconds=60)

LimiterFactory = Callable[[ManualClock], Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    """Limiters of one back end; those of the Redis one share a key prefix (one deployment)."""
    if request.param == "memory":
        yield MemoryLimiter
        return
    made: list[RedisLimiter] = []
    async with redis_backend() as backend:

        def redis_limiter(clock: ManualClock) -> Limiter:
            made.append(RedisLimiter(REDIS_URL, backend.prefix, clock))
            return made[-1]

        yield redis_limiter
        for limiter in made:
            await limiter.close()


async def record(limiter: Limiter, key: str, times: int) -> None:
    for _ in range(times):
        await limiter.record(key, THREE_PER_MINUTE)


async def test_a_key_may_act_until_its_count_is_reached(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(ManualClock())
    await record(limiter, "login:alice", 2)
    assert await limiter.retry_after("login:alice", THREE_PER_MINUTE) is None
    await record(limiter, "login:alice", 1)
    assert await limiter.retry_after("login:alice", THREE_PER_MINUTE) == 60
    assert await limiter.retry_after("login:bob", THREE_PER_MINUTE) is None


async def test_the_wait_counts_from_the_oldest_event_kept(make_limiter: LimiterFactory) -> None:
    clock = ManualClock()
    limiter = make_limiter(clock)
    await record(limiter, "k", 1)
    clock.advance(20)
    await record(limiter, "k", 2)
    assert await limiter.retry_after("k", THREE_PER_MINUTE) == 40
    clock.advance(40)
    assert await limiter.retry_after("k", THREE_PER_MINUTE) is None


async def test_reset_forgets_every_event_of_the_key(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(ManualClock())
    await record(limiter, "k", 3)
    await limiter.reset("k")
    assert await limiter.retry_after("k", THREE_PER_MINUTE) is None


async def test_redis_limits_are_one_limit_for_every_process() -> None:
    clock = ManualClock()
    async with redis_backend() as backend:
        first = RedisLimiter(REDIS_URL, backend.prefix, clock)
        second = RedisLimiter(REDIS_URL, backend.prefix, clock)
        try:
            await record(first, "login:alice", 2)
            await record(second, "login:alice", 1)
            assert await first.retry_after("login:alice", THREE_PER_MINUTE) == 60
            await second.reset("login:alice")
            assert await first.retry_after("login:alice", THREE_PER_MINUTE) is None
        finally:
            await first.close()
            await second.close()


async def test_without_redis_the_limits_are_kept_in_this_process() -> None:
    clock = ManualClock()
    async with private_redis() as redis:
        limiter = RedisLimiter(redis.url, "sb:", clock)
        redis.stop()
        try:
            await record(limiter, "login:alice", 3)
            assert await limiter.retry_after("login:alice", THREE_PER_MINUTE) == 60
        finally:
            await limiter.close()
