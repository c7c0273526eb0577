"""Remembered device records (`simbridge.services.device_records`), on a real database: what
they save must never outlive the cache time, a forget, or a read that raced with a forget.

"Not read again" is shown by changing the row behind the cache's back (as another process or
an operator would): a remembered record still says what it said."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.models import Device, DeviceType, User
from simbridge.services.device_records import DeviceRecord, DeviceRecords
from tests.helpers import statements_sent

DIGEST = "d" * 64


async def new_device(
    username: str = "alice", device_type: DeviceType = DeviceType.HOST, device_id: int | None = None
) -> Device:
    user, _ = await User.get_or_create(username=username, defaults={"password_hash": "-"})
    extra = {} if device_id is None else {"id": device_id}
    return await Device.create(
        user=user, name=username, device_type=device_type, device_token=DIGEST, **extra
    )


async def delete_behind_the_cache(device: Device) -> None:
    await Device.filter(id=device.id).delete()


async def test_a_record_is_read_once_then_remembered(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings)
    device = await new_device(device_type=DeviceType.CLIENT)
    expected = DeviceRecord(device.user_id, DeviceType.CLIENT, DIGEST)

    with statements_sent() as sent:
        assert await records.get(device.id) == expected
        await delete_behind_the_cache(device)
        assert await records.get(device.id) == expected
        assert records.remembered(device.id) == expected

    assert sum(statement.startswith("SELECT") for statement in sent) == 1, sent


async def test_a_record_expires_after_the_cache_time(
    orm_settings: Settings, clock: ManualClock
) -> None:
    records = DeviceRecords(orm_settings)
    device = await new_device()
    assert await records.get(device.id) is not None
    await delete_behind_the_cache(device)

    clock.advance(orm_settings.user_cache_seconds)

    assert records.remembered(device.id) is None
    assert await records.get(device.id) is None


@pytest.mark.parametrize(
    "forget",
    [
        lambda records, device: records.forget(device.id),
        lambda records, device: records.forget_user(device.user_id),
        lambda records, device: records.forget_everything(),
    ],
    ids=["device", "user", "everything"],
)
async def test_a_forgotten_record_is_read_again(
    orm_settings: Settings, forget: Callable[[DeviceRecords, Device], None]
) -> None:
    records = DeviceRecords(orm_settings)
    device = await new_device()
    assert await records.get(device.id) is not None
    await delete_behind_the_cache(device)

    forget(records, device)

    assert records.remembered(device.id) is None
    assert await records.get(device.id) is None


async def test_forgetting_a_user_keeps_other_users_devices(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings)
    alices, bobs = await new_device("alice"), await new_device("bob")
    for device in (alices, bobs):
        assert await records.get(device.id) is not None

    records.forget_user(alices.user_id)

    assert records.remembered(alices.id) is None
    assert records.remembered(bobs.id) == DeviceRecord(bobs.user_id, DeviceType.HOST, DIGEST)


async def test_a_missing_device_is_not_remembered(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings)
    assert await records.get(4242) is None

    device = await new_device(device_id=4242)

    assert await records.get(4242) == DeviceRecord(device.user_id, DeviceType.HOST, DIGEST)


async def test_an_id_no_device_can_have_is_not_looked_up(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings)
    with statements_sent() as sent:
        assert await records.get(0) is None
        assert await records.get(2**31) is None
    assert sent == []


async def test_a_read_that_raced_with_a_forget_is_not_kept(orm_settings: Settings) -> None:
    """The read started before the forget, so it may hold what the forget was about (a
    rotated token, a deleted device): the caller gets it, the cache does not keep it."""
    records = DeviceRecords(orm_settings)
    device = await new_device()
    reading = asyncio.create_task(records.get(device.id))
    await asyncio.sleep(0)  # `get` asks for the device and starts the reader
    await asyncio.sleep(0)  # the reader sends its query, and waits for the database thread
    assert not reading.done()

    records.forget(device.id)

    assert await reading == DeviceRecord(device.user_id, DeviceType.HOST, DIGEST)
    assert records.remembered(device.id) is None


async def test_devices_missed_together_are_read_in_one_query(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings)
    devices = [await new_device(f"user{i}") for i in range(20)]

    with statements_sent() as sent:
        found = await asyncio.gather(*(records.get(device.id) for device in devices))

    assert found == [DeviceRecord(d.user_id, DeviceType.HOST, DIGEST) for d in devices]
    assert len(sent) == 1, sent


async def test_the_least_recently_used_go_first_past_capacity(orm_settings: Settings) -> None:
    records = DeviceRecords(orm_settings, capacity=2)
    first, second, third = [await new_device(f"user{i}") for i in range(3)]
    assert await records.get(first.id) is not None
    assert await records.get(second.id) is not None
    assert records.remembered(first.id) is not None  # now the most recently used

    assert await records.get(third.id) is not None

    assert records.remembered(second.id) is None
    assert records.remembered(first.id) is not None
    assert records.remembered(third.id) is not None


async def test_nothing_is_remembered_with_a_cache_time_of_zero(orm_settings: Settings) -> None:
    records = DeviceRecords(replace(orm_settings, user_cache_seconds=0))
    device = await new_device()

    assert await records.get(device.id) is not None
    assert records.remembered(device.id) is None
