"""Retention: old message log rows are pruned in batches; newer ones stay."""

from __future__ import annotations

import httpx
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.db_locks import RETENTION, holding
from tests.helpers import history, paired_world, receive, socket

DAY = 24 * 3600


async def relay_sms(
    http: httpx.AsyncClient, headers: dict[str, str], host_id: int, n: int
) -> list[str]:
    """Send `n` SMS commands through the REST API; their req_ids."""
    req_ids = []
    for index in range(n):
        reply = await http.post(
            "/sms",
            json={"to_device_id": host_id, "sim": 1, "to": "123", "body": f"m{index}"},
            headers=headers,
        )
        assert reply.status_code == 200, reply.text
        req_ids.append(reply.json()["req_id"])
    return req_ids


@pytest.mark.parametrize("batch_size", [2, 5000])
async def test_prune_deletes_rows_past_retention_and_keeps_newer(
    any_store_settings: Settings, clock: ManualClock, batch_size: int
) -> None:
    async with paired_world(
        any_store_settings,
        retention_days=90,
        retention_batch_size=batch_size,
        token_ttl_seconds=365 * DAY,
    ) as world:
        host = world.pair.host
        async with socket(world.live, host) as host_ws:
            old = await relay_sms(world.http, host.owner.headers, host.id, 5)
            clock.advance(60 * DAY)
            new = await relay_sms(world.http, host.owner.headers, host.id, 3)
            for _ in range(8):
                await receive(host_ws)
        await world.live.runtime.commands.flush()  # the command states, and the log
        clock.advance(31 * DAY)  # the first 5 are now 91 days old, the last 3 only 31

        assert await world.live.runtime.retention.prune() == 5
        assert await world.live.runtime.retention.prune() == 0

        rows = await history(world.http, host.owner, host)
        assert [row["payload"]["body"] for row in rows] == ["m2", "m1", "m0"]
        # a command's state is kept as long as its history (contract §7)
        states = [
            (await world.http.get(f"/commands/{req_id}", headers=host.owner.headers)).status_code
            for req_id in old + new
        ]
        assert states == [404] * 5 + [200] * 3


async def test_a_pass_is_skipped_while_another_process_runs_one(
    any_store_settings: Settings, clock: ManualClock
) -> None:
    """Several workers or machines share the database: only one prunes at a time."""
    async with paired_world(
        any_store_settings, retention_days=1, token_ttl_seconds=365 * DAY
    ) as world:
        host = world.pair.host
        async with socket(world.live, host) as host_ws:
            await relay_sms(world.http, host.owner.headers, host.id, 2)
            for _ in range(2):
                await receive(host_ws)
        await world.live.runtime.commands.flush()  # the command states, and the log
        clock.advance(2 * DAY)
        retention = world.live.runtime.retention

        async with holding(any_store_settings, RETENTION, wait=False) as held_elsewhere:
            assert held_elsewhere
            assert await retention.prune() is None
        assert len(await history(world.http, host.owner, host)) == 2

        assert await retention.prune() == 2
