"""Scale-out scenarios: several SimBridge processes sharing one Redis (SIMBRIDGE_BROKER=redis),
measured against one process (memory broker) in the same run, with the same load generator.

- `cross-throughput`, `cross-latency`: every host on process A, every client on process B;
  and, on the same two processes, hosts and clients both on A (same-process frames with the
  Redis broker); and one process with the memory broker (the reference).
- `workers`: `simbridge serve --workers N` with the Redis broker; the kernel puts each socket
  on either worker. Total relayed messages/s against one process with the memory broker.
- `presence`: kill -9 a process holding `--hosts` hosts; seconds until the other shows them
  all offline (`GET /devices`).
- `reclaim`: `--sockets` sockets on A, a private redis-server stopped for `--down` s and
  started again on its port; seconds until A's device keys are all back in Redis (and until
  B's `GET /devices` shows them all online).
- `storm --split` (in `bench.run`): the devices of a process killed with -9 reconnect at once,
  half to A and half to B.
- `cross-soak`: the cross-process `cross-latency` load for `--seconds`; RSS of A and B.

Redis figures are differences of `INFO all` before and after the measured phase (see
`RedisStats.since` for how the broker's calls are told apart from its scripts' own).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, RedisTarget, accounting, cluster, one_process
from bench.common import (
    HasCpu,
    Snapshot,
    close_pairs,
    ge,
    le,
    per,
    quiet_gc,
    ratio,
    target,
)
from bench.loadgen import HttpConn, Paced, PairConn, RoundTrips, Ws, latency_summary, now, open_ws
from bench.servers import (
    Group,
    PairInfo,
    Server,
    Setup,
    client_url,
    close_all,
    connect_pairs,
    host_url,
    log,
    open_checked,
    process_cpu_seconds,
    setup_simbridge,
    sockets_by_process,
)

ACCOUNT_SECONDS = 2.0  # the MONITOR window after a measured one (0.5 s with --quick)
POLL_SECONDS = 0.1  # GET /devices while waiting for presence to change
PRESENCE_LIMIT_SECONDS = 30.0  # bound of every wait for presence


# --------------------------------------------------------------------------- sockets


async def connect_split(
    host_server: Server,
    client_server: Server,
    pairs: list[PairInfo],
    client: str,
    concurrency: int = 32,
) -> list[PairConn]:
    """Open each pair's host on `host_server` and its client on `client_server` (greeted and
    checked), `concurrency` pairs at a time."""
    out: list[PairConn | None] = [None] * len(pairs)
    cursor = iter(range(len(pairs)))

    async def worker() -> None:
        for index in cursor:
            info = pairs[index]
            host = await open_checked(host_url(host_server, info), info.host_id, client)
            guest = await open_checked(client_url(client_server, info), info.client_id, client)
            out[index] = PairConn(host, guest)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(pairs)) or 1)))
    return [pair for pair in out if pair is not None]


async def open_many(targets: list[tuple[str, int]], client: str, concurrency: int) -> list[Ws]:
    """Open and check every (url, device id), `concurrency` at a time."""
    out: list[Ws] = []
    cursor = iter(targets)

    async def worker() -> None:
        for url, device_id in cursor:
            out.append(await open_checked(url, device_id, client, 30.0))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(targets)) or 1)))
    return out


async def storm(
    targets: list[tuple[str, int]], client: str, greeted_at: list[float] | None = None
) -> dict[str, Any]:
    """Connect every (url, device id) at once; when each was greeted (s after the start),
    appended to `greeted_at` as they come."""
    greeted_at = [] if greeted_at is None else greeted_at
    failures: list[str] = []
    sockets: list[Ws] = []
    t0 = now()

    async def one(url: str, device_id: int) -> None:
        try:
            ws = await open_ws(url, client, 30.0)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(type(exc).__name__ + ": " + str(exc)[:120])
            return
        greeted_at.append(now() - t0)
        sockets.append(ws)
        if ws.greeting.get("device_id") != device_id:
            failures.append(f"greeting {ws.greeting!r}")

    await asyncio.gather(*(one(url, device_id) for url, device_id in targets))
    return {"greeted_at": greeted_at, "failures": failures, "sockets": sockets}


# --------------------------------------------------------------------------- legs


def _load_figures(
    wall: float, server_cpu: float, loadgen_cpu: float, msgs: int, servers: int
) -> dict[str, Any]:
    return {
        "server_cpu_us_per_msg": per(server_cpu, msgs),
        "server_cpu_pct": round(100 * server_cpu / wall, 1),
        "server_processes": servers,
        "loadgen_cpu_us_per_msg": per(loadgen_cpu, msgs),
        "loadgen_cpu_pct": round(100 * loadgen_cpu / wall, 1),
    }


@dataclass
class Watch:
    """What a leg on the Redis broker measures besides the load: the Redis, the processes
    that are not servers (for the CPU accounting), and whose commands MONITOR counts."""

    redis: RedisTarget
    also: list[Any]
    workdir: Path
    owners: dict[int, str]  # pid -> name (A, B, worker 1, ...)

    @classmethod
    def of(cls, group: Cluster, owners: dict[int, str]) -> Watch:
        return cls(group.redis, group.also(), group.work.path, owners)


def _account_seconds(opts: argparse.Namespace) -> float:
    return 0.5 if opts.quick else ACCOUNT_SECONDS


async def round_trip_leg(
    conns: list[PairConn],
    servers: HasCpu,
    count: int,
    opts: argparse.Namespace,
    watch: Watch | None = None,
    label: str = "frame",
) -> dict[str, Any]:
    """The `throughput` load on open pairs: `--window` commands in flight per pair. With a
    `watch`: Redis counters around the measured window, then a MONITOR window."""
    redis, also = (watch.redis, watch.also) if watch else (None, [])
    quiet_gc()
    load = RoundTrips(conns, opts.window)
    load.start()
    await asyncio.sleep(opts.warmup)
    r0 = await redis.stats() if redis else None
    done0, start = load.completed, Snapshot.take(servers, also)
    load.recording = True
    await asyncio.sleep(opts.seconds)
    load.recording = False
    done1, end = load.completed, Snapshot.take(servers, also)
    r1 = await redis.stats() if redis else None
    counted: dict[str, Any] = {}
    if watch is not None:
        frames = lambda: 2 * load.completed  # noqa: E731
        async with accounting(watch.redis, watch.workdir, watch.owners, counted, frames, label):
            await asyncio.sleep(_account_seconds(opts))
    lost = await load.drain(5.0)
    wall, server_cpu, loadgen_cpu = end.since(start)
    trips = done1 - done0
    out = {
        "round_trips_per_s": round(trips / wall, 1),
        "relayed_msgs_per_s": round(2 * trips / wall, 1),
        "rtt": latency_summary(load.rtts),
        **_load_figures(wall, server_cpu, loadgen_cpu, 2 * trips, count),
        "errors": load.errors,
        "error_examples": [e.decode(errors="replace") for e in load.error_examples],
        "lost_at_end": lost,
    }
    if redis and r0 and r1:
        out["redis"] = r1.since(r0, 2 * trips, label)
        out["redis"]["cpu_pct"] = round(100 * out["redis"]["cpu_seconds"] / wall, 1)
        out["monitor"] = counted.get("monitor")
    return out


async def paced_leg(
    conns: list[PairConn],
    servers: HasCpu,
    count: int,
    opts: argparse.Namespace,
    watch: Watch | None = None,
    label: str = "frame",
) -> dict[str, Any]:
    """The `latency` load on open pairs: `--rate` relayed messages/s, open loop. With a
    `watch`: Redis counters around the measured phase, then a MONITOR window at that rate."""
    redis, also = (watch.redis, watch.also) if watch else (None, [])
    quiet_gc()
    if opts.warmup > 0:
        warm = Paced(conns, opts.rate / 2)
        await warm.run(opts.warmup)
        await warm.settle(2.0)
    r0 = await redis.stats() if redis else None
    start = Snapshot.take(servers, also)
    load = Paced(conns, opts.rate / 2)  # a round trip relays two messages
    await load.run(opts.seconds)
    lost = await load.settle(5.0)
    wall, server_cpu, loadgen_cpu = Snapshot.take(servers, also).since(start)
    r1 = await redis.stats() if redis else None
    counted: dict[str, Any] = {}
    if watch is not None:
        extra = Paced(conns, opts.rate / 2)
        frames = lambda: len(extra.samples)  # noqa: E731
        async with accounting(watch.redis, watch.workdir, watch.owners, counted, frames, label):
            await extra.run(_account_seconds(opts))
            await extra.settle(2.0)
    relayed = len(load.samples)
    out = {
        "offered_msgs_per_s": opts.rate,
        "commands_sent": load.sent,
        "relayed": relayed,
        "one_way": latency_summary(load.one_way()),
        "rtt": latency_summary(load.round_trips()),
        "lost": lost,
        "errors": load.errors,
        "error_examples": [e.decode(errors="replace") for e in load.error_examples],
        "loadgen_max_send_lag_ms": round(load.max_lag * 1000, 3),
        **_load_figures(wall, server_cpu, loadgen_cpu, relayed, count),
    }
    if redis and r0 and r1:
        out["redis"] = r1.since(r0, relayed, label)
        out["monitor"] = counted.get("monitor")
    return out


Leg = Callable[..., Any]


async def _one_process_leg(opts: argparse.Namespace, leg: Leg) -> dict[str, Any]:
    """The reference: the same load on one process with the memory broker."""
    async with one_process(opts) as server:
        setup = await setup_simbridge(server, opts.pairs, 4)
        conns = await connect_pairs(server, setup.pairs, opts.client)
        result = await leg(conns, server, 1, opts)
        await close_pairs(conns)
        result["stop"] = server.stop()
    return result


async def _cluster_legs(
    opts: argparse.Namespace, leg: Leg
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """On two processes A and B sharing Redis: hosts and clients on A (same-process frames),
    then hosts on A and clients on B (cross-process frames). Returns both and the cluster's
    description."""
    async with cluster(opts, 2) as group:
        a, b = group.servers
        both = Group([a, b])
        setup = await setup_simbridge(a, opts.pairs, 4)
        log(f"set-up took {setup.seconds:.1f} s")
        watch = Watch.of(group, {a.pid: "A", b.pid: "B"})
        conns = await connect_pairs(a, setup.pairs, opts.client)
        log("same-process leg: hosts and clients on A")
        same = await leg(conns, both, 2, opts, watch, "same_process_frame")
        await close_pairs(conns)
        await asyncio.sleep(0.5)  # releases done
        conns = await connect_split(a, b, setup.pairs, opts.client)
        log("cross-process leg: hosts on A, clients on B")
        cross = await leg(conns, both, 2, opts, watch, "cross_process_frame")
        await close_pairs(conns)
        info = _cluster_info(group)
        info["stop"] = [server.stop() for server in group.servers]
    return same, cross, info


def _cluster_info(group: Cluster) -> dict[str, Any]:
    return {
        "redis": "private redis-server" if group.redis.private else group.redis.url,
        "database": group.db.kind,
        "prefix": group.redis.prefix,
    }


def _redis_of(result: dict[str, Any], key: str) -> Any:
    return (result.get("redis") or {}).get(key)


def commands_per_frame(result: dict[str, Any], label: str) -> Any:
    """The broker's Redis commands per frame: counted by MONITOR (what the servers sent, not
    what scripts called); EVALSHA per frame from INFO if MONITOR could not run."""
    monitor = result.get("monitor")
    if monitor:
        return monitor.get(f"commands_per_{label}")
    return _redis_of(result, f"evalsha_per_{label}")


# --------------------------------------------------------------------------- cross-throughput


async def scenario_cross_throughput(opts: argparse.Namespace) -> dict[str, Any]:
    one = await _one_process_leg(opts, round_trip_leg)
    same, cross, info = await _cluster_legs(opts, round_trip_leg)
    rts = cross["round_trips_per_s"]
    per_cross = commands_per_frame(cross, "cross_process_frame")
    per_same = commands_per_frame(same, "same_process_frame")
    failed = sum(r["errors"] + r["lost_at_end"] for r in (cross, same))
    vs_one = ratio(rts, one["round_trips_per_s"])
    targets = [
        target("cross-process round trips/s vs one process", vs_one, ">= 0.50", ge(vs_one, 0.50)),
        target(
            "Redis commands per cross-process frame",
            per_cross,
            "<= 1",
            None if per_cross is None else round(per_cross, 2) <= 1.0,
        ),
        target(
            "Redis commands per same-process frame",
            per_same,
            "0",
            None if per_same is None else round(per_same, 2) == 0.0,
        ),
        target("errors + lost (two processes)", failed, "0", failed == 0),
    ]
    return {
        "params": {k: getattr(opts, k) for k in ("pairs", "window", "warmup", "seconds")},
        "cluster": info,
        "simbridge": cross,
        "same_process": same,
        "one_process": one,
        "bare": None,
        "ratio": {
            "cross_vs_one_process": vs_one,
            "same_process_vs_one_process": ratio(
                same["round_trips_per_s"], one["round_trips_per_s"]
            ),
            "cross_vs_same_process": ratio(rts, same["round_trips_per_s"]),
        },
        "targets": targets,
    }


# --------------------------------------------------------------------------- cross-latency


async def scenario_cross_latency(opts: argparse.Namespace) -> dict[str, Any]:
    one = await _one_process_leg(opts, paced_leg)
    same, cross, info = await _cluster_legs(opts, paced_leg)

    def added(q: str) -> float | None:
        a, b = cross["one_way"][f"{q}_ms"], one["one_way"][f"{q}_ms"]
        return None if a is None or b is None else round(a - b, 3)

    lost = cross["lost"] + cross["errors"]
    targets = [
        target("one-way p50 added ms", added("p50"), "<= 1", le(added("p50"), 1.0)),
        target("one-way p99 added ms", added("p99"), "<= 5", le(added("p99"), 5.0)),
        target("lost (cross-process)", lost, "0", lost == 0),
    ]
    return {
        "params": {k: getattr(opts, k) for k in ("pairs", "rate", "warmup", "seconds")},
        "cluster": info,
        "simbridge": cross,
        "same_process": same,
        "one_process": one,
        "bare": None,
        "added_ms": {q: added(q) for q in ("p50", "p90", "p99", "max")},
        "ratio": None,
        "targets": targets,
    }


# --------------------------------------------------------------------------- workers


async def _wait_workers(server: Server, workers: int, timeout: float = 60.0) -> None:
    """Until the manager has its workers and 20 fresh connections in a row got GET /health
    200 (bounded)."""
    deadline = now() + timeout
    while len(server.pids()) < workers + 1 and now() < deadline:
        await asyncio.sleep(0.1)
    good = 0
    while good < 20 and now() < deadline:
        conn = HttpConn("127.0.0.1", server.port)
        try:
            status, _ = await conn.request("GET", "/health", timeout=5.0)
        except Exception:  # noqa: BLE001 - not ready yet
            status = 0
        finally:
            conn.close()
        good = good + 1 if status == 200 else 0
        if status != 200:
            await asyncio.sleep(0.2)
    if good < 20:
        raise RuntimeError(f"{workers} workers not ready within {timeout} s:\n{server.log_tail()}")


async def scenario_workers(opts: argparse.Namespace) -> dict[str, Any]:
    one = await _one_process_leg(opts, round_trip_leg)
    async with cluster(opts, 0) as group:
        server = group.start(workers=opts.workers)
        await _wait_workers(server, opts.workers)
        processes = server.pids()
        setup = await setup_simbridge(server, opts.pairs, 4)
        conns = await connect_pairs(server, setup.pairs, opts.client)
        placed = sockets_by_process(processes, server.port)
        cpu0 = {pid: process_cpu_seconds(pid, missing=0.0) for pid in processes}
        names = {pid: f"pid {pid}" for pid in processes}
        names[server.pid] = "manager"
        many = await round_trip_leg(
            conns, server, len(processes), opts, Watch.of(group, names), "frame"
        )
        cpu = {pid: process_cpu_seconds(pid, missing=0.0) - cpu0[pid] for pid in processes}
        await close_pairs(conns)
        many["processes"] = len(processes)
        # the manager first, then the workers: where the sockets went, and the CPU each used
        # (warm-up included)
        many["sockets_by_process"] = [placed.get(pid, 0) for pid in processes]
        many["cpu_seconds_by_process"] = [round(cpu[pid], 2) for pid in processes]
        # a frame between workers is one DELIVER script
        per_frame = (many.get("monitor") or {}).get("per_frame") or {}
        many["cross_worker_share"] = per_frame.get("evalsha DELIVER", 0.0)
        many["cluster"] = _cluster_info(group)
        many["stop"] = server.stop()
    total, ref = many["relayed_msgs_per_s"], one["relayed_msgs_per_s"]
    vs_one = ratio(total, ref)
    failed = many["errors"] + many["lost_at_end"]
    targets = [
        target(
            f"relayed msgs/s, {opts.workers} workers vs one process",
            vs_one,
            "> 1",
            None if vs_one is None else vs_one > 1.0,
        ),
        target("errors + lost (workers)", failed, "0", failed == 0),
    ]
    return {
        "params": {
            k: getattr(opts, k) for k in ("workers", "pairs", "window", "warmup", "seconds")
        },
        "simbridge": many,
        "one_process": one,
        "bare": None,
        "ratio": {"relayed_msgs_per_s": vs_one},
        "targets": targets,
    }


# --------------------------------------------------------------------------- presence


async def online_count(server: Server, setup: Setup, wanted: set[int]) -> int:
    """How many of `wanted` `GET /devices` on `server` shows online (one request per account)."""
    found = 0
    conn = HttpConn("127.0.0.1", server.port)
    try:
        for _, token in setup.accounts:
            for device in await conn.json("GET", "/devices", None, token):
                if device["id"] in wanted and device["is_online"]:
                    found += 1
    finally:
        conn.close()
    return found


async def wait_presence(
    server: Server, setup: Setup, wanted: set[int], online: bool, limit: float
) -> tuple[float | None, float | None]:
    """Poll `GET /devices` every POLL_SECONDS (bounded by `limit`) until all of `wanted` show
    `online` (or all offline); returns (first changed, all changed) in s, None if not."""
    t0 = now()
    first = None
    while now() - t0 < limit:
        count = await online_count(server, setup, wanted)
        done = count if online else len(wanted) - count
        if done and first is None:
            first = now() - t0
        if done == len(wanted):
            return first, now() - t0
        await asyncio.sleep(POLL_SECONDS)
    return first, None


async def scenario_presence(opts: argparse.Namespace) -> dict[str, Any]:
    async with cluster(opts, 2) as group:
        a, b = group.servers
        setup = await setup_simbridge(a, opts.hosts, 10, paired=False)
        hosts = {info.host_id for info in setup.pairs}
        sockets = await open_many(
            [(host_url(a, info), info.host_id) for info in setup.pairs], opts.client, 64
        )
        _, seen = await wait_presence(b, setup, hosts, True, PRESENCE_LIMIT_SECONDS)
        log(f"{len(sockets)} hosts on A (pid {a.pid}), online on B after {seen} s; kill -9 A")
        os.kill(a.pid, signal.SIGKILL)
        first, gone = await wait_presence(b, setup, hosts, False, PRESENCE_LIMIT_SECONDS)
        a.proc.wait(10)
        await close_all(sockets)
        sb = {
            "hosts": opts.hosts,
            "connected": len(sockets),
            "online_on_b_s": None if seen is None else round(seen, 2),
            "first_offline_s": None if first is None else round(first, 2),
            "all_offline_s": None if gone is None else round(gone, 2),
            "poll_seconds": POLL_SECONDS,
            "cluster": _cluster_info(group),
            "killed_exit_code": a.proc.returncode,
        }
    targets = [
        target(
            "presence expiry after kill -9 (s)",
            sb["all_offline_s"],
            "<= 10",
            le(sb["all_offline_s"], 10.0),
        )
    ]
    return {
        "params": {"hosts": opts.hosts},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": targets,
    }


# --------------------------------------------------------------------------- reclaim


async def scenario_reclaim(opts: argparse.Namespace) -> dict[str, Any]:
    pairs = max(1, opts.sockets // 2)
    async with cluster(opts, 2, redis="private") as group:
        a, b = group.servers
        redis = group.redis
        private = redis.private
        assert private is not None
        setup = await setup_simbridge(a, pairs, 10)
        conns = await connect_pairs(a, setup.pairs, opts.client, concurrency=64)
        devices = {d for info in setup.pairs for d in (info.host_id, info.client_id)}
        keys = [f"{redis.prefix}dev:{device}" for device in devices]
        claimed = await _wait_keys(redis, keys, PRESENCE_LIMIT_SECONDS)
        _, seen = await wait_presence(b, setup, devices, True, PRESENCE_LIMIT_SECONDS)
        log(f"{len(devices)} sockets on A: keys in {claimed} s, online on B after {seen} s")
        log(f"stopping the private redis-server (pid {private.pid}) for {opts.down} s")
        private.stop()
        await asyncio.sleep(opts.down)
        private.start()
        t0 = now()
        up = await private.wait_ready()
        back = await _wait_keys(redis, keys, PRESENCE_LIMIT_SECONDS)
        keys_s = now() - t0 if back is not None else None
        _, view = await wait_presence(b, setup, devices, True, PRESENCE_LIMIT_SECONDS)
        view_s = now() - t0 if view is not None else None
        dropped = sum(1 for pair in conns for ws in (pair.host, pair.client) if ws.closed.done())
        # every pair relays one round trip afterwards
        check = RoundTrips(conns, 1, limit=len(conns))
        check.start()
        relayed = await check.until_done(10.0)
        await close_pairs(conns)
        sb = {
            "sockets": len(devices),
            "down_s": opts.down,
            "redis_up_s": round(up, 3),
            "keys_back_after_start_s": None if keys_s is None else round(keys_s, 3),
            "keys_back_after_up_s": None if keys_s is None else round(keys_s - up, 3),
            "all_online_on_b_after_start_s": None if view_s is None else round(view_s, 3),
            "sockets_dropped": dropped,
            "round_trip_after": relayed and check.errors == 0,
            "cluster": _cluster_info(group),
        }
    reclaim = sb["keys_back_after_up_s"]
    targets = [
        target(
            f"re-claim of {len(devices)} sockets after Redis returns (s)",
            reclaim,
            "<= 2",
            le(reclaim, 2.0),
        ),
        target("sockets dropped", dropped, "0", dropped == 0 and bool(sb["round_trip_after"])),
    ]
    return {
        "params": {"sockets": opts.sockets, "down": opts.down},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": targets,
    }


async def _wait_keys(redis: RedisTarget, keys: list[str], limit: float) -> float | None:
    """Poll (every 10 ms, bounded) until every key exists; seconds it took, None if not."""
    t0 = now()
    while now() - t0 < limit:
        try:
            if await redis.count_keys(keys) == len(keys):
                return now() - t0
        except Exception:  # noqa: BLE001 - Redis still coming back
            pass
        await asyncio.sleep(0.01)
    return None


# --------------------------------------------------------------------------- storm --split


async def storm_split(opts: argparse.Namespace) -> dict[str, Any]:
    """The devices of a process killed with -9 reconnect at once, half to A, half to B."""
    async with cluster(opts, 3) as group:
        a, b, dead = group.servers
        setup = await setup_simbridge(a, opts.hosts, 10)
        before = await open_many(
            [(host_url(dead, info), info.host_id) for info in setup.pairs], opts.client, 64
        )
        keys = [f"{group.redis.prefix}dev:{info.host_id}" for info in setup.pairs]
        await _wait_keys(group.redis, keys, PRESENCE_LIMIT_SECONDS)
        log(f"{len(before)} hosts on process C (pid {dead.pid}); kill -9 C, then the storm")
        os.kill(dead.pid, signal.SIGKILL)
        dead.proc.wait(10)
        for _ in range(500):  # bounded: the load generator sees its sockets closed
            if all(ws.closed.done() for ws in before):
                break
            await asyncio.sleep(0.01)
        quiet_gc()
        both = Group([a, b])
        targets = [
            (host_url(a if i % 2 == 0 else b, info), info.host_id)
            for i, info in enumerate(setup.pairs)
        ]
        r0 = await group.redis.stats()
        start = Snapshot.take(both, group.also())
        out = await storm(targets, opts.client)
        wall, server_cpu, loadgen_cpu = Snapshot.take(both, group.also()).since(start)
        r1 = await group.redis.stats()
        greeted = out["greeted_at"]
        await close_all(out["sockets"])
        await asyncio.sleep(1.0)  # the releases
        # the same storm again under MONITOR, to count the commands of each connect
        counted: dict[str, Any] = {}
        owners = {a.pid: "A", b.pid: "B"}
        greeted_again: list[float] = []
        frames = lambda: len(greeted_again)  # noqa: E731
        async with accounting(group.redis, group.work.path, owners, counted, frames, "connect"):
            again = await storm(targets, opts.client, greeted_again)
        await close_all(again["sockets"])
        result = {
            "hosts": opts.hosts,
            "failures": len(out["failures"]),
            "failure_examples": sorted(set(out["failures"]))[:3],
            "all_greeted_s": round(max(greeted), 3) if greeted else None,
            "greeted": latency_summary(greeted),
            "greeted_count": len(greeted),
            "server_cpu_us_per_connect": per(server_cpu, len(greeted)),
            "loadgen_cpu_us_per_connect": per(loadgen_cpu, len(greeted)),
            "redis": r1.since(r0, len(greeted), "connect"),
            "monitor": counted.get("monitor"),
            "cluster": _cluster_info(group),
        }
        result["stop"] = [server.stop() for server in (a, b)]
    return result


# --------------------------------------------------------------------------- cross-soak


async def scenario_cross_soak(opts: argparse.Namespace) -> dict[str, Any]:
    async with cluster(opts, 2) as group:
        a, b = group.servers
        both = Group([a, b])
        setup = await setup_simbridge(a, opts.pairs, 4)
        conns = await connect_split(a, b, setup.pairs, opts.client)
        quiet_gc()
        warm = Paced(conns, opts.rate / 2)
        await warm.run(opts.warmup)
        await warm.settle(2.0)
        r0 = await group.redis.stats()
        samples: list[tuple[float, int, int]] = []
        start = Snapshot.take(both, group.also())
        t0 = now()
        sampler = asyncio.create_task(_sample(a, b, t0, opts, samples, group.also()))
        load = Paced(conns, opts.rate / 2)
        await load.run(opts.seconds)
        await asyncio.wait([sampler], timeout=opts.sample_every + 5)
        sampler.cancel()
        samples.append((now() - t0, a.rss_kib(), b.rss_kib()))
        lost = await load.settle(5.0)
        wall, server_cpu, loadgen_cpu = Snapshot.take(both, group.also()).since(start)
        r1 = await group.redis.stats()
        await close_pairs(conns)
        relayed = len(load.samples)
        window = min(60.0, opts.seconds / 5)
        end = t0 + opts.seconds
        sb: dict[str, Any] = {
            "offered_msgs_per_s": opts.rate,
            "relayed": relayed,
            "lost": lost,
            "errors": load.errors,
            "warmup_lost": warm.sent - warm.answered,
            "one_way": latency_summary(load.one_way()),
            "window_s": window,
            "one_way_first": latency_summary(load.one_way(t0, t0 + window)),
            "one_way_last": latency_summary(load.one_way(end - window, end)),
            **_load_figures(wall, server_cpu, loadgen_cpu, relayed, 2),
            "redis": r1.since(r0, relayed, "cross_process_frame"),
            "rss_samples": [[round(t, 1), ka, kb] for t, ka, kb in samples],
            "cluster": _cluster_info(group),
        }
        for name, column in (("a", 1), ("b", 2)):
            kib = [s[column] for s in samples]
            sb[f"rss_{name}_start_kib"], sb[f"rss_{name}_end_kib"] = kib[0], kib[-1]
            sb[f"rss_{name}_max_kib"] = max(kib)
            sb[f"rss_{name}_growth_pct"] = round(100 * (kib[-1] - kib[0]) / kib[0], 2)
            if len(samples) > 1:
                fit = statistics.linear_regression([s[0] / 60 for s in samples], kib)
                sb[f"rss_{name}_slope_kib_per_min"] = round(fit.slope, 1)
        sb["stop"] = [server.stop() for server in (a, b)]
    growth = max(sb["rss_a_growth_pct"], sb["rss_b_growth_pct"])
    failed = sb["lost"] + sb["errors"]
    targets = [
        target(
            f"RSS growth over {relayed:,} cross-process frames (%, worse of A and B)",
            growth,
            "< 5 %",
            growth < 5,
        ),
        target("lost (cross-soak)", failed, "0", failed == 0),
    ]
    names = ("pairs", "rate", "warmup", "seconds", "sample_every")
    return {
        "params": {k: getattr(opts, k) for k in names},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": targets,
    }


async def _sample(
    a: Server,
    b: Server,
    t0: float,
    opts: argparse.Namespace,
    out: list[tuple[float, int, int]],
    also: list[Any],
) -> None:
    """(s since t0, RSS KiB of A, of B) every `--sample-every` s until `--seconds`; each
    sample also records what other processes used since the one before."""
    both = Group([a, b])
    last = Snapshot.take(both, also)
    steps = max(1, int(opts.seconds / opts.sample_every + 0.999))
    for k in range(steps):
        delay = t0 + k * opts.sample_every - now()
        if delay > 0:
            await asyncio.sleep(delay)
        out.append((now() - t0, a.rss_kib(), b.rss_kib()))
        if k:
            snap = Snapshot.take(both, also)
            snap.since(last)
            last = snap


RUNNERS = {
    "cross-throughput": scenario_cross_throughput,
    "cross-latency": scenario_cross_latency,
    "workers": scenario_workers,
    "presence": scenario_presence,
    "reclaim": scenario_reclaim,
    "cross-soak": scenario_cross_soak,
}
