"""The write-behind message log: batches, flush, stop and back-pressure, on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from tortoise import Tortoise

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.db import apply_migrations, tortoise_config
from simbridge.models import CommandRecord, CommandState, Device, DeviceType, MessageLog, User
from simbridge.services.command_changes import CommandAnswered, NewCommand
from simbridge.services.log_store import LogStore, OrmLogStore, SqliteLogStore
from simbridge.services.message_log import MessageLogWriter
from tests.postgres import fresh_postgres_database

POLL_INTERVAL = 0.01
SECRET = "x" * 40
POLL_LIMIT = 5.0


@dataclass
class Devices:
    host: int
    client: int
    store: LogStore


@pytest.fixture(
    params=[
        "own-sqlite-connection",
        "tortoise-sqlite",
        pytest.param("tortoise-postgres", marks=pytest.mark.postgres),
    ]
)
async def devices(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Devices]:
    """A migrated database with Tortoise initialised on it, one host and one client, and a
    log store as the server picks it: on SQLite its own connection (or Tortoise's), on
    PostgreSQL Tortoise's asyncpg pool."""
    if request.param == "tortoise-postgres":
        async for url in fresh_postgres_database():
            async with migrated(
                Settings(jwt_secret=SECRET, database_url=url), OrmLogStore
            ) as found:
                yield found
        return
    settings = Settings(jwt_secret=SECRET, db_path=str(tmp_path / "log.db"))
    own_connection = request.param == "own-sqlite-connection"
    store = partial(SqliteLogStore, settings.sqlite_path) if own_connection else OrmLogStore
    async with migrated(settings, store) as found:
        yield found


@asynccontextmanager
async def migrated(
    settings: Settings, make_store: Callable[[], LogStore]
) -> AsyncIterator[Devices]:
    await apply_migrations(settings)
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    try:
        user = await User.create(username="logger", password_hash="not-a-real-hash")
        host = await Device.create(user=user, name="host", device_type=DeviceType.HOST)
        client = await Device.create(user=user, name="client", device_type=DeviceType.CLIENT)
        store = make_store()
        yield Devices(host=host.id, client=client.id, store=store)
        await store.close()
    finally:
        await Tortoise.close_connections()


def make_writer(
    devices: Devices,
    clock: ManualClock,
    batch_size: int = 10,
    flush_seconds: float = 0.01,
    queue_size: int = 1000,
) -> MessageLogWriter:
    return MessageLogWriter(
        store=devices.store,
        clock=clock,
        batch_size=batch_size,
        flush_seconds=flush_seconds,
        queue_size=queue_size,
    )


async def stored_payloads() -> list[str]:
    return [row.payload for row in await MessageLog.all().order_by("id")]


async def wait_for_row_count(expected: int) -> int:
    """Poll (bounded) until the table holds `expected` rows; returns the last count seen."""
    count = await MessageLog.all().count()
    for _ in range(int(POLL_LIMIT / POLL_INTERVAL)):
        if count >= expected:
            break
        await asyncio.sleep(POLL_INTERVAL)
        count = await MessageLog.all().count()
    return count


async def completes(awaitable: Awaitable[object], within: float) -> bool:
    try:
        await asyncio.wait_for(awaitable, within)
    except TimeoutError:
        return False
    return True


async def test_write_stores_rows_with_their_fields(devices: Devices, clock: ManualClock) -> None:
    writer = make_writer(devices, clock, batch_size=10)
    writer.start()
    expected = []
    for n in range(35):
        clock.advance(1)
        if n % 3 == 0:
            row = (None, devices.host, "command", f'{{"n":{n}}}')  # a REST command
        elif n % 3 == 1:
            row = (devices.client, devices.host, "command", f'{{"n":{n}}}')
        else:
            row = (devices.host, devices.client, "event", f'{{"n":{n}}}')
        expected.append((*row, clock()))
        await writer.write(*row)

    await writer.flush()
    stored = await MessageLog.all().order_by("id")
    await writer.stop()

    assert [
        (r.from_device_id, r.to_device_id, r.msg_type, r.payload, r.created_at) for r in stored
    ] == expected


async def test_write_commits_full_batch_without_waiting_for_timer(
    devices: Devices, clock: ManualClock
) -> None:
    # The timer is far away: only a full batch (10 rows) can be committed before it fires.
    writer = make_writer(devices, clock, batch_size=10, flush_seconds=60)
    writer.start()
    for n in range(35):
        await writer.write(devices.client, devices.host, "command", f'{{"n":{n}}}')

    assert await wait_for_row_count(30) == 30
    with pytest.raises(TimeoutError):  # the last 5 rows wait for 5 more or for the timer
        await asyncio.wait_for(writer.flush(), 0.2)
    assert await MessageLog.all().count() == 30

    for n in range(35, 40):
        await writer.write(devices.client, devices.host, "command", f'{{"n":{n}}}')
    await asyncio.wait_for(writer.flush(), POLL_LIMIT)
    await writer.stop()

    assert await stored_payloads() == [f'{{"n":{n}}}' for n in range(40)]


async def test_flush_waits_for_rows_written_before_it(devices: Devices, clock: ManualClock) -> None:
    writer = make_writer(devices, clock, batch_size=10, flush_seconds=0.05)
    writer.start()
    for n in range(25):
        await writer.write(devices.host, devices.client, "event", f'{{"n":{n}}}')

    await asyncio.wait_for(writer.flush(), POLL_LIMIT)
    count = await MessageLog.all().count()  # read at once: no polling
    await writer.stop()

    assert count == 25


async def test_stop_commits_every_queued_row_once(devices: Devices, clock: ManualClock) -> None:
    writer = make_writer(devices, clock, batch_size=7, flush_seconds=0.01)
    writer.start()
    payloads = [f'{{"n":{n}}}' for n in range(50)]
    for payload in payloads:
        await writer.write(devices.client, devices.host, "command", payload)

    await asyncio.wait_for(writer.stop(), POLL_LIMIT)

    assert await stored_payloads() == payloads


async def test_write_waits_while_queue_full_until_writer_starts(
    devices: Devices, clock: ManualClock
) -> None:
    writer = make_writer(devices, clock, batch_size=10, flush_seconds=0.01, queue_size=2)
    await asyncio.wait_for(writer.write(devices.client, devices.host, "command", '{"n":0}'), 1)
    await asyncio.wait_for(writer.write(devices.client, devices.host, "command", '{"n":1}'), 1)
    third = asyncio.create_task(writer.write(devices.client, devices.host, "command", '{"n":2}'))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(third), 0.1)
    assert not third.done()

    writer.start()
    await asyncio.wait_for(third, POLL_LIMIT)
    await asyncio.wait_for(writer.stop(), POLL_LIMIT)

    assert await stored_payloads() == ['{"n":0}', '{"n":1}', '{"n":2}']


async def test_flush_returns_when_a_blocked_write_was_cancelled(
    devices: Devices, clock: ManualClock
) -> None:
    """A socket handler can be cancelled (client gone) while its write waits on a full queue;
    the row never entered the queue, so `flush` (GET /history, shutdown) must not wait for it."""
    writer = make_writer(devices, clock, batch_size=10, flush_seconds=0.01, queue_size=1)
    await writer.write(devices.client, devices.host, "command", '{"n":0}')
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            writer.write(devices.client, devices.host, "command", '{"n":1}'), 0.1
        )

    writer.start()
    flushed = await completes(writer.flush(), within=1)
    if flushed:
        await asyncio.wait_for(writer.stop(), POLL_LIMIT)

    assert flushed, "flush() waits for a row whose write was cancelled before it was queued"
    assert await stored_payloads() == ['{"n":0}']


async def test_rows_of_a_deleted_device_do_not_cost_the_rest_of_their_batch(
    devices: Devices, clock: ManualClock
) -> None:
    """A device removed while its rows were queued: its rows are refused by the foreign key,
    every other row of the batch is kept."""
    owner = await User.get(username="logger")
    gone = await Device.create(user=owner, name="gone", device_type=DeviceType.CLIENT)
    gone_id = gone.id
    await gone.delete()
    writer = make_writer(devices, clock, batch_size=10, flush_seconds=0.01)
    writer.start()
    for n in range(6):
        sender = gone_id if n % 3 == 0 else devices.client
        await writer.write(sender, devices.host, "command", f'{{"n":{n}}}')
    await asyncio.wait_for(writer.flush(), POLL_LIMIT)
    await writer.stop()

    assert await stored_payloads() == [f'{{"n":{n}}}' for n in (1, 2, 4, 5)]


async def test_writer_outlives_a_store_that_fails(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that cannot be opened costs its rows (logged), never the writer: `flush`
    and `stop` still return, so relaying never waits on a dead writer."""
    unreachable = SqliteLogStore(tmp_path / "no-such-dir" / "log.db", busy_retry_seconds=0.01)
    writer = MessageLogWriter(
        store=unreachable, clock=clock, batch_size=2, flush_seconds=0.01, queue_size=2
    )
    writer.start()
    for n in range(6):  # more than the queue holds: each write must still get through
        await asyncio.wait_for(writer.write(None, None, "command", f'{{"n":{n}}}'), POLL_LIMIT)
    await asyncio.wait_for(writer.flush(), POLL_LIMIT)
    await asyncio.wait_for(writer.stop(), POLL_LIMIT)

    assert "message-log rows could not be stored" in caplog.text


async def test_command_states_are_stored_with_the_rows_in_every_store(
    devices: Devices, clock: ManualClock
) -> None:
    """Commands inserted many to a statement, answers applied after them, in each store."""
    writer = make_writer(devices, clock, batch_size=7)
    writer.start()
    user_id = (await Device.get(id=devices.host)).user_id
    for n in range(20):
        await writer.write(devices.client, devices.host, "command", f'{{"n":{n}}}')
        state = CommandState.SENT if n % 4 else CommandState.FAILED
        await writer.change(
            NewCommand(f"r{n}", user_id, devices.host, devices.client, "GET_SIMS", state, clock())
        )
    for n in range(0, 20, 2):  # the failed ones (n % 4 == 0) are not `sent`: unchanged
        await writer.change(CommandAnswered(devices.host, f"r{n}", f'{{"a":{n}}}', clock()))
    for n in (2, 6):  # a second answer, in the same statement or a later one: the first counts
        await writer.change(CommandAnswered(devices.host, f"r{n}", '{"a":"again"}', clock()))
    await writer.flush()
    rows = await CommandRecord.all().order_by("id").values_list("req_id", "state", "answer")
    await writer.stop()

    def expected(n: int) -> tuple[str, str, str | None]:
        if n % 4 == 0:
            return (f"r{n}", "failed", None)
        if n % 2 == 0:
            return (f"r{n}", "answered", f'{{"a":{n}}}')
        return (f"r{n}", "sent", None)

    assert [(req, str(state), answer) for req, state, answer in rows] == [
        expected(n) for n in range(20)
    ]
    assert len(await stored_payloads()) == 20
