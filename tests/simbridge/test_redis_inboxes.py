"""`RedisInboxes` against the shared Redis and an in-memory database: seqs 1, 2, 3, ... under
concurrency and across reserved blocks, the database mark always ahead of what Redis gives out,
and a counter Redis lost started again past that mark (never reused)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from tortoise import Tortoise

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.hub.control import Control
from simbridge.hub.redis import RedisBroker
from simbridge.models import Device, DeviceType, User
from simbridge.services.redis_inboxes import BLOCK, RedisInboxes
from tests.redis_server import RedisBackend, redis_backend
from tests.simbridge.hub.test_local import new_hub

IN_MEMORY = {
    "connections": {"default": "sqlite://:memory:"},
    "apps": {"models": {"models": ["simbridge.models"], "default_connection": "default"}},
    "use_tz": True,
}


@dataclass
class World:
    inboxes: RedisInboxes
    broker: RedisBroker
    backend: RedisBackend
    device: Device


@pytest.fixture
async def world() -> AsyncIterator[World]:
    await Tortoise.init(config=IN_MEMORY, _enable_global_fallback=True)
    await Tortoise.generate_schemas()
    try:
        user = await User.create(username="alice", password_hash="-")
        device = await Device.create(user=user, name="c", device_type=DeviceType.CLIENT)
        async with redis_backend() as backend:
            # Nothing here tests a Redis that stops answering, and 3,079 keeps go in one batch
            # (0.3-0.9 s here): a loaded machine gets time.
            broker = backend(command_timeout_seconds=5.0)

            async def ignore(control: Control) -> None:
                return None

            await broker.start(new_hub(), ignore)
            settings = Settings(jwt_secret="x" * 32, clock=ManualClock(), inbox_max=10)
            inboxes = RedisInboxes(broker, settings)
            try:
                yield World(inboxes, broker, backend, device)
            finally:
                await inboxes.stop()
                await broker.stop()
    finally:
        await Tortoise.close_connections()


async def mark_of(device: Device) -> int:
    await device.refresh_from_db()
    return device.inbox_seq


async def keep_events(world: World, count: int) -> list[int]:
    """`count` events for the (offline) device, all at once; their seqs."""
    kept = await asyncio.gather(
        *(
            world.inboxes.keep(world.device.id, f'{{"n":{n}}}', None, event=True, here=False)
            for n in range(count)
        )
    )
    return [k.seq for k in kept if k.seq is not None]


async def test_concurrent_frames_across_several_blocks_get_every_seq_once(world: World) -> None:
    count = 3 * BLOCK + 7
    seqs = await keep_events(world, count)
    assert sorted(seqs) == list(range(1, count + 1))
    assert await mark_of(world.device) >= count  # reserved before it was given out
    opened = await world.inboxes.open(world.device.id, 0, [])
    assert (opened.greeted, opened.latest) == (count, count)
    assert [seq for seq, _ in opened.frames] == list(range(count - 9, count + 1))  # inbox_max


async def test_a_counter_lost_by_redis_starts_again_past_the_database_mark(world: World) -> None:
    assert await keep_events(world, 5) == [1, 2, 3, 4, 5]
    mark = await mark_of(world.device)
    async with Redis.from_url(world.backend.url, protocol=2) as redis:
        prefix = world.backend.prefix
        await redis.delete(f"{prefix}inbox:{world.device.id}:n", f"{prefix}inbox:{world.device.id}")
    (seq,) = await keep_events(world, 1)
    assert seq == mark + 1 > 5
    opened = await world.inboxes.open(world.device.id, 5, [])
    assert opened.latest == seq and [s for s, _ in opened.frames] == [seq]  # 6..mark: a gap


async def test_queued_frames_take_consecutive_seqs_after_the_greeting(world: World) -> None:
    await keep_events(world, 2)
    opened = await world.inboxes.open(world.device.id, 1, ['{"q":1}', '{"q":2}'])
    assert (opened.greeted, opened.latest, opened.numbered) == (2, 4, [3, 4])
    assert [seq for seq, _ in opened.frames] == [2, 3, 4]
    assert opened.frames[1:] == [(3, '{"q":1}'), (4, '{"q":2}')]
