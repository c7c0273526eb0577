"""Measuring helpers shared by the scenarios of `bench.run` and `bench.scaleout`: CPU
snapshots (server, load generator, the rest of the machine), target rows, the paced phase."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.loadgen import Paced, now
from bench.servers import CLK_TCK, close_all, log


class HasCpu(Protocol):
    def cpu_seconds(self) -> float: ...


def machine_busy_seconds() -> float:
    """CPU seconds that processes spent on the machine (all cores, user + nice + system; not
    interrupts, which the kernel does not charge to any process), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / CLK_TCK


@dataclass
class Snapshot:
    """Wall clock, server CPU, load generator CPU and the machine's CPU at one instant."""

    wall: float
    server_cpu: float
    loadgen_cpu: float
    machine_cpu: float
    also_cpu: float = 0.0  # processes of this run that are not the server (a private Redis)

    @classmethod
    def take(cls, server: HasCpu, also: Iterable[HasCpu] = ()) -> Snapshot:
        """`server` is a `Server` or a group of them; `also`, other processes this run started
        (their CPU is neither the server's nor "other processes'")."""
        return cls(
            now(),
            server.cpu_seconds(),
            time.process_time(),
            machine_busy_seconds(),
            sum(p.cpu_seconds() for p in also),
        )

    def since(self, start: Snapshot) -> tuple[float, float, float]:
        wall = self.wall - start.wall
        server = self.server_cpu - start.server_cpu
        loadgen = self.loadgen_cpu - start.loadgen_cpu
        also = self.also_cpu - start.also_cpu
        other = self.machine_cpu - start.machine_cpu - server - loadgen - also
        OTHER_CPU.append(100 * max(0.0, other) / wall if wall > 0 else 0.0)
        return wall, server, loadgen


# CPU % (of one core) that other processes used during each measured phase of this scenario
OTHER_CPU: list[float] = []


async def wait_until_idle(limit_seconds: float, busy_pct: float = 10.0, quiet: int = 3) -> float:
    """Wait (bounded) until the rest of the machine used < `busy_pct` % of a core in each of
    `quiet` consecutive seconds; returns the last figure measured."""
    deadline = time.monotonic() + limit_seconds
    calm = 0
    while True:
        before, t0 = machine_busy_seconds() - time.process_time(), now()
        await asyncio.sleep(1.0)
        used = machine_busy_seconds() - time.process_time() - before
        pct = 100 * used / (now() - t0)
        calm = calm + 1 if pct < busy_pct else 0
        if calm >= quiet or time.monotonic() >= deadline:
            return pct
        if calm == 0:
            log(f"machine busy ({pct:.0f} % of a core used by other processes); waiting")


def per(value: float, count: int, scale: float = 1e6) -> float | None:
    return round(value / count * scale, 1) if count else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def target(name: str, measured: Any, target: str, ok: bool | None) -> dict[str, Any]:
    return {"name": name, "measured": measured, "target": target, "ok": ok}


def le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def quiet_gc() -> None:
    """Collect once and freeze what exists, so the load generator's GC pauses stay short."""
    gc.collect()
    gc.freeze()


async def paced_phase(conns: list, rate_msgs: float, warmup: float, seconds: float) -> Paced:
    if warmup > 0:
        warm = Paced(conns, rate_msgs / 2)
        await warm.run(warmup)
        await warm.settle(2.0)
    load = Paced(conns, rate_msgs / 2)  # a round trip relays two messages
    await load.run(seconds)
    await load.settle(5.0)
    return load


async def close_pairs(conns: list) -> None:
    await close_all([ws for pair in conns for ws in (pair.host, pair.client)])
