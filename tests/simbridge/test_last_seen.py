"""The write-behind `last_seen` (`simbridge.services.last_seen`), on a real database: batched
writes, a device deleted meanwhile, a failing database, and `stop`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from tortoise import Tortoise

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.db import CONNECTION
from simbridge.models import Device, DeviceType, User
from simbridge.services.last_seen import BATCH_SIZE, LastSeenWriter
from tests.helpers import eventually, statements_sent

LONG = 3600.0  # a flush interval no test waits for


@pytest.fixture
async def user(orm_settings: Settings) -> User:
    return await User.create(username="alice", password_hash="-")


@pytest.fixture
async def writer(clock: ManualClock, user: User) -> AsyncIterator[LastSeenWriter]:
    """A writer whose own flushes never come during a test: the tests flush."""
    started = LastSeenWriter(clock, LONG)
    started.start()
    yield started
    await started.stop()


async def new_devices(user: User, count: int) -> list[int]:
    devices = [Device(user=user, name=f"d{i}", device_type=DeviceType.HOST) for i in range(count)]
    await Device.bulk_create(devices)
    return list(await Device.filter(user_id=user.id).order_by("id").values_list("id", flat=True))


async def stored(device_id: int) -> datetime | None:
    found: datetime | None = await Device.get(id=device_id).values_list("last_seen", flat=True)
    return found


async def test_every_noted_time_is_written_in_one_statement_per_batch(
    writer: LastSeenWriter, clock: ManualClock, user: User
) -> None:
    device_ids = await new_devices(user, BATCH_SIZE + 1)
    noted = {}
    for device_id in device_ids:
        writer.note(device_id)
        noted[device_id] = clock()
        clock.advance(0.001)

    with statements_sent() as sent:
        await writer.flush()

    assert [s.split()[0] for s in sent] == ["UPDATE", "UPDATE"]
    rows = await Device.filter(user_id=user.id).values_list("id", "last_seen")
    assert dict(rows) == noted


async def test_the_latest_time_of_a_device_is_written(
    writer: LastSeenWriter, clock: ManualClock, user: User
) -> None:
    (device_id,) = await new_devices(user, 1)
    writer.note(device_id)  # connected
    clock.advance(5)
    writer.note(device_id)  # and disconnected

    await writer.flush()

    assert await stored(device_id) == clock()


async def test_a_noted_time_is_seen_here_before_it_is_written(
    writer: LastSeenWriter, clock: ManualClock, user: User
) -> None:
    (device_id,) = await new_devices(user, 1)
    assert writer.seen(device_id) is None

    writer.note(device_id)

    assert writer.seen(device_id) == clock()
    assert await stored(device_id) is None
    await writer.flush()
    assert writer.seen(device_id) is None
    assert await stored(device_id) == clock()


async def test_a_device_deleted_meanwhile_does_not_stop_the_others(
    writer: LastSeenWriter, clock: ManualClock, user: User
) -> None:
    kept, deleted = await new_devices(user, 2)
    writer.note(kept)
    writer.note(deleted)
    await Device.filter(id=deleted).delete()

    await writer.flush()

    assert await stored(kept) == clock()
    assert writer.seen(deleted) is None  # written (to no row), not retried


async def test_times_that_could_not_be_written_are_kept_for_the_next_flush(
    writer: LastSeenWriter,
    clock: ManualClock,
    user: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (device_id,) = await new_devices(user, 1)
    writer.note(device_id)
    database = Tortoise.get_connection(CONNECTION)
    await database.execute_script("ALTER TABLE devices RENAME TO devices_away")
    try:
        with caplog.at_level(logging.ERROR, logger="simbridge.last_seen"):
            await writer.flush()
    finally:
        await database.execute_script("ALTER TABLE devices_away RENAME TO devices")

    assert "last_seen of 1 devices could not be stored" in caplog.text
    assert writer.seen(device_id) == clock()
    await writer.flush()
    assert await stored(device_id) == clock()


async def test_the_writer_flushes_on_its_own(clock: ManualClock, user: User) -> None:
    (device_id,) = await new_devices(user, 1)
    writer = LastSeenWriter(clock, 0.01)
    writer.start()
    try:
        writer.note(device_id)

        assert await eventually(lambda: stored(device_id))
    finally:
        await writer.stop()


async def test_stop_writes_every_noted_time(
    writer: LastSeenWriter, clock: ManualClock, user: User
) -> None:
    (device_id,) = await new_devices(user, 1)
    writer.note(device_id)

    await writer.stop()

    assert await stored(device_id) == clock()
