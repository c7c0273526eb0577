"""Whether this process can serve: its database and its broker answer (contract §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tortoise import connections

from simbridge.db import CONNECTION
from simbridge.hub import Broker

CHECK_TIMEOUT_SECONDS = 2.0
OK = "ok"


async def check_health(broker: Broker) -> tuple[bool, dict[str, str]]:
    """Each check's result ("ok" or what failed, never a connection string), and whether all
    passed. The checks run at once, each bounded in time, so a load balancer gets its answer
    within `CHECK_TIMEOUT_SECONDS` even when a back end hangs."""
    database, broker_state = await asyncio.gather(_run(_database_answers), _run(broker.check))
    checks = {"database": database, "broker": broker_state}
    return all(state == OK for state in checks.values()), checks


async def _database_answers() -> bool:
    await connections.get(CONNECTION).execute_query("SELECT 1")
    return True


async def _run(check: Callable[[], Awaitable[bool]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            answered = await check()
    except TimeoutError:
        return "timed out"
    except Exception as exc:  # the class names the failure; its text may hold an address
        return f"unreachable: {type(exc).__name__}"
    return OK if answered else "unreachable"
