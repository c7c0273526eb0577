"""The benchmark runner: one scenario per call, one JSON line on stdout.

    python -m bench.run throughput            # or latency, connections, storm, rest, history,
                                              # login-stall, log-complete, soak, replay, waits
    python -m bench.run cross-throughput      # scale-out (Redis broker): cross-throughput,
                                              # cross-latency, workers, presence, reclaim,
                                              # cross-soak, storm --split
    python -m bench.run scale-out             # those, and storm --split: one run, every target
    python -m bench.run all                   # every scenario, then a markdown table
    python -m bench.run all --quick           # small sizes: a smoke run

Each scenario starts its own servers on 127.0.0.1 (SimBridge on a fresh SQLite file and, where
it has a counterpart, the bare relay of bench/bare_relay.py), sets them up, measures, and stops
them by PID. The scale-out scenarios (bench/scaleout.py) start several SimBridge processes on
one Redis. Progress goes to stderr. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import delivery, loadgen, operations, scaleout
from bench.cluster import BACKGROUND, SHARED_REDIS_URL
from bench.common import OTHER_CPU, Snapshot, wait_until_idle
from bench.common import ge as _ge
from bench.common import le as _le
from bench.common import paced_phase as _paced_phase
from bench.common import per as _per
from bench.common import quiet_gc as _quiet_gc
from bench.common import ratio as _ratio
from bench.common import target as _target
from bench.loadgen import (
    HttpConn,
    Paced,
    RoundTrips,
    Ws,
    event_frame,
    latency_summary,
    now,
    open_ws,
)
from bench.operations import SERVER_ENV as OPERATIONS_ENV
from bench.operations import operations_on
from bench.servers import (
    PASSWORD,
    REPO,
    Server,
    Setup,
    Workdir,
    client_url,
    close_all,
    connect_pairs,
    host_url,
    log,
    open_checked,
    raise_fd_limit,
    setup_bare,
    setup_simbridge,
)

DESIGN_DOC_RT_PER_S = 110  # the design document's stack, as measured in issue 4
STORM_TARGET_S = 0.5  # 1,000 hosts greeted (the scale-out issue; it was 1.5 s before)

# Default sizes, and the --quick ones (a smoke run of every scenario in about 35 s).
DEFAULTS: dict[str, dict[str, Any]] = {
    # webhook_rate: with --ops, INCOMING_SMS per second over the webhooks' side hosts together
    "throughput": {"pairs": 50, "window": 4, "warmup": 2.0, "seconds": 10.0, "webhook_rate": 4.0},
    "latency": {"pairs": 10, "rate": 1000, "warmup": 1.0, "seconds": 10.0},
    "connections": {"sockets": 10_000, "checkpoint": 5_000, "concurrency": 64, "hold": 3.0},
    "storm": {"hosts": 1000},
    "rest": {"hosts": 20, "concurrency": 32, "warmup": 1.0, "seconds": 10.0},
    "history": {"rows": 1_000_000, "requests": 2000, "limit": 50},
    "login-stall": {"pairs": 10, "rate": 1000, "logins": 10, "bursts": 3, "baseline": 5.0},
    "log-complete": {"messages": 20_000, "pairs": 10, "window": 4},
    "soak": {
        "pairs": 10,
        "rate": 1000,
        "warmup": 60.0,
        "seconds": 600.0,
        "sample_every": 10.0,
        "sms_rate": 10.0,
        "reconnect_rate": 1.0,
    },
    "replay": {"frames": 1000, "rounds": 5},  # bench/delivery.py
    "ops-cost": {"pairs": 50, "webhook_rate": 4.0, "warmup": 1.0, "seconds": 10.0},  # operations
    "waits": {  # bench/delivery.py: held `wait=S` requests, and the `latency` load around them
        "requests": 10_000,
        "wait": 30,
        "concurrency": 200,
        "pairs": 10,
        "rate": 1000,
        "warmup": 1.0,
        "seconds": 10.0,
    },
    # scale-out (bench/scaleout.py): several processes on one Redis
    "cross-throughput": {"pairs": 50, "window": 4, "warmup": 2.0, "seconds": 10.0},
    "cross-latency": {"pairs": 10, "rate": 1000, "warmup": 1.0, "seconds": 10.0},
    "workers": {"workers": 2, "pairs": 50, "window": 4, "warmup": 2.0, "seconds": 10.0},
    "presence": {"hosts": 1000},
    "reclaim": {"sockets": 1000, "down": 3.0},
    "cross-soak": {
        "pairs": 10,
        "rate": 1000,
        "warmup": 30.0,
        "seconds": 100.0,
        "sample_every": 5.0,
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "throughput": {"pairs": 10, "warmup": 0.2, "seconds": 0.5},
    "latency": {"warmup": 0.2, "seconds": 0.5},
    "connections": {"sockets": 400, "checkpoint": 200, "hold": 0.3},
    "storm": {"hosts": 100},
    "rest": {"hosts": 5, "warmup": 0.2, "seconds": 0.5},
    "history": {"rows": 10_000, "requests": 100},
    "login-stall": {"bursts": 1, "baseline": 0.5},
    "log-complete": {"messages": 2000},
    "soak": {"warmup": 2.0, "seconds": 10.0, "sample_every": 1.0},
    "replay": {"frames": 100, "rounds": 2},
    "ops-cost": {"warmup": 0.5, "seconds": 2.0},
    "waits": {"requests": 500, "warmup": 0.2, "seconds": 1.0},
    "cross-throughput": {"pairs": 10, "warmup": 0.2, "seconds": 0.5},
    "cross-latency": {"warmup": 0.2, "seconds": 0.5},
    "workers": {"pairs": 10, "warmup": 0.5, "seconds": 0.5},
    "presence": {"hosts": 100},
    "reclaim": {"sockets": 100, "down": 1.0},
    "cross-soak": {"warmup": 2.0, "seconds": 10.0, "sample_every": 1.0},
}
SCENARIOS = list(DEFAULTS)
SCALE_OUT = list(scaleout.RUNNERS)
# `scale-out` runs every target of the scale-out issue in one run: its scenarios, and the storm
# on one process and split over two
SCALE_OUT_RUN: list[tuple[str, dict[str, Any]]] = [
    *((name, {}) for name in SCALE_OUT if name != "cross-soak"),
    ("storm", {"split": True}),
    ("cross-soak", {}),
]
# `all`: every scenario
RUNS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "all": [*((name, {}) for name in SCENARIOS if name not in SCALE_OUT), *SCALE_OUT_RUN],
    "scale-out": SCALE_OUT_RUN,
}


async def _open_pairs(server: Server, setup: Setup, opts: argparse.Namespace) -> list:
    since = opts.since and server.kind != "bare"  # the bare relay keeps nothing
    conns = await connect_pairs(server, setup.pairs, opts.client, since=since)
    _quiet_gc()
    return conns


async def _close_pairs(conns: list) -> None:
    await close_all([ws for pair in conns for ws in (pair.host, pair.client)])


async def _with_servers(
    opts: argparse.Namespace,
    pairs: int,
    measure: Callable[[Server, Setup], Awaitable[dict[str, Any]]],
    users: int = 4,
    bare: bool = True,
    bcrypt_rounds: int = 4,
    paired: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run `measure` on the bare relay (unless --no-bare) and then on SimBridge."""
    bare_result = None
    if bare and not opts.no_bare:
        with Workdir(opts.keep) as work:
            server = work.start_bare(opts.bare_backlog)
            log(f"bare relay pid {server.pid} port {server.port}")
            bare_result = await measure(server, setup_bare(pairs))
            bare_result["stop"] = server.stop()
    with Workdir(opts.keep) as work:
        server = work.start_simbridge(bcrypt_rounds, opts.server_env)
        log(f"simbridge pid {server.pid} port {server.port}, setting up {pairs} pairs")
        setup = await setup_simbridge(server, pairs, users, paired=paired)
        log(f"set-up took {setup.seconds:.1f} s")
        result = await measure(server, setup)
        result["setup_seconds"] = round(setup.seconds, 2)
        result["stop"] = server.stop()
    return result, bare_result


# --------------------------------------------------------------------------- throughput


async def scenario_throughput(opts: argparse.Namespace) -> dict[str, Any]:
    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        if server.kind == "bare" or not opts.ops:
            return await round_trips(server, setup)
        async with operations_on(server, setup, opts.client, opts.webhook_rate) as ops:
            result = await round_trips(server, setup)
        return {**result, "operations": ops.summary()}

    async def round_trips(server: Server, setup: Setup) -> dict[str, Any]:
        conns = await _open_pairs(server, setup, opts)
        load = RoundTrips(conns, opts.window)
        load.start()
        await asyncio.sleep(opts.warmup)
        done0, start = load.completed, Snapshot.take(server)
        load.recording = True
        await asyncio.sleep(opts.seconds)
        load.recording = False
        done1, end = load.completed, Snapshot.take(server)
        lost = await load.drain(5.0)
        await _close_pairs(conns)
        wall, server_cpu, loadgen_cpu = end.since(start)
        trips = done1 - done0
        return {
            "round_trips_per_s": round(trips / wall, 1),
            "relayed_msgs_per_s": round(2 * trips / wall, 1),
            "rtt": latency_summary(load.rtts),
            "server_cpu_us_per_msg": _per(server_cpu, 2 * trips),
            "server_cpu_pct": round(100 * server_cpu / wall, 1),
            "loadgen_cpu_us_per_msg": _per(loadgen_cpu, 2 * trips),
            "loadgen_cpu_pct": round(100 * loadgen_cpu / wall, 1),
            "errors": load.errors,
            "error_examples": [e.decode(errors="replace") for e in load.error_examples],
            "lost_at_end": lost,
            "server_rss_kib": server.rss_kib(),
        }

    sb, bare = await _with_servers(opts, opts.pairs, measure)
    rts = sb["round_trips_per_s"]
    failed = sb["errors"] + sb["lost_at_end"]
    ratio = (
        {
            "round_trips_per_s": _ratio(rts, bare["round_trips_per_s"]),
            "rtt_p50": _ratio(sb["rtt"]["p50_ms"], bare["rtt"]["p50_ms"]),
            "rtt_p99": _ratio(sb["rtt"]["p99_ms"], bare["rtt"]["p99_ms"]),
            "server_cpu_us_per_msg": _ratio(
                sb["server_cpu_us_per_msg"], bare["server_cpu_us_per_msg"]
            ),
        }
        if bare
        else None
    )
    targets = [
        _target(
            "round trips/s vs bare relay",
            ratio and ratio["round_trips_per_s"],
            ">= 0.60",
            _ge(ratio and ratio["round_trips_per_s"], 0.60),
        ),
        _target(
            "round trips/s vs design doc (~110/s)",
            round(rts / DESIGN_DOC_RT_PER_S, 1),
            ">= 25x",
            rts >= 25 * DESIGN_DOC_RT_PER_S,
        ),
        _target("errors + lost", failed, "0", failed == 0),
    ]
    params = {k: getattr(opts, k) for k in ("pairs", "window", "warmup", "seconds")}
    if opts.ops:
        params["webhook_rate"] = opts.webhook_rate
    return {"params": params, "simbridge": sb, "bare": bare, "ratio": ratio, "targets": targets}


# --------------------------------------------------------------------------- latency


async def scenario_latency(opts: argparse.Namespace) -> dict[str, Any]:
    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        conns = await _open_pairs(server, setup, opts)
        start = Snapshot.take(server)
        load = await _paced_phase(conns, opts.rate, opts.warmup, opts.seconds)
        wall, server_cpu, loadgen_cpu = Snapshot.take(server).since(start)
        await _close_pairs(conns)
        lost = load.sent - load.answered
        return {
            "offered_msgs_per_s": opts.rate,
            "commands_sent": load.sent,
            "one_way": latency_summary(load.one_way()),
            "rtt": latency_summary(load.round_trips()),
            "lost": lost,
            "errors": load.errors,
            "error_examples": [e.decode(errors="replace") for e in load.error_examples],
            "loadgen_max_send_lag_ms": round(load.max_lag * 1000, 3),
            "server_cpu_pct": round(100 * server_cpu / wall, 1),
            "loadgen_cpu_pct": round(100 * loadgen_cpu / wall, 1),
        }

    sb, bare = await _with_servers(opts, opts.pairs, measure)
    ratio = None
    if bare:
        ratio = {
            f"{kind}_{q}": _ratio(sb[kind][f"{q}_ms"], bare[kind][f"{q}_ms"])
            for kind in ("one_way", "rtt")
            for q in ("p50", "p90", "p99", "max")
        }
    ow = sb["one_way"]
    targets = [
        _target("one-way p50 ms", ow["p50_ms"], "<= 1", _le(ow["p50_ms"], 1.0)),
        _target("one-way p99 ms", ow["p99_ms"], "<= 5", _le(ow["p99_ms"], 5.0)),
        _target("lost", sb["lost"] + sb["errors"], "0", sb["lost"] == 0 and sb["errors"] == 0),
    ]
    params = {k: getattr(opts, k) for k in ("pairs", "rate", "warmup", "seconds")}
    return {"params": params, "simbridge": sb, "bare": bare, "ratio": ratio, "targets": targets}


# --------------------------------------------------------------------------- connections


async def scenario_connections(opts: argparse.Namespace) -> dict[str, Any]:
    pairs = opts.sockets // 2
    checkpoint = min(opts.checkpoint, opts.sockets)

    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        # the bare relay only goes to the checkpoint: its ratio is taken there
        total = opts.sockets if server.kind == "simbridge" else checkpoint
        targets: list[tuple[str, int]] = []
        for info in setup.pairs[: (total + 1) // 2]:
            targets.append((host_url(server, info), info.host_id))
            targets.append((client_url(server, info), info.client_id))
        sockets: list[Ws | None] = [None] * len(targets)
        times: list[float] = []
        failures: list[str] = []

        async def connect_range(lo: int, hi: int) -> float:
            cursor = iter(range(lo, hi))

            async def worker() -> None:
                for index in cursor:
                    url, device_id = targets[index]
                    t0 = now()
                    try:
                        ws = await open_ws(url, opts.client, 30.0)
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        failures.append(type(exc).__name__ + ": " + str(exc)[:120])
                        continue
                    times.append(now() - t0)
                    if ws.greeting.get("device_id") != device_id:
                        failures.append(f"greeting {ws.greeting!r}")
                    sockets[index] = ws

            t0 = now()
            await asyncio.gather(*(worker() for _ in range(opts.concurrency)))
            return now() - t0

        settle = 0.2 if opts.quick else 1.0  # let the server finish its work before reading RSS
        warm = min(100, checkpoint)
        start = Snapshot.take(server)
        await connect_range(0, warm)
        await asyncio.sleep(settle)
        rss_warm = server.rss_kib()
        seconds = await connect_range(warm, checkpoint)
        await asyncio.sleep(settle)
        rss_checkpoint = server.rss_kib()
        if total > checkpoint:
            seconds += await connect_range(checkpoint, total)
            await asyncio.sleep(settle)
        rss_full = server.rss_kib()
        await asyncio.sleep(opts.hold)
        live = [ws for ws in sockets if ws is not None]
        dropped = sum(1 for ws in live if ws.closed.done())
        pongs = await _ping_all(live)
        rss_end = server.rss_kib()
        Snapshot.take(server).since(start)  # records what other processes used meanwhile
        await close_all(live)
        connected = len(live)
        return {
            "sockets": total,
            "connected": connected,
            "failures": len(failures),
            "failure_examples": sorted(set(failures))[:3],
            "dropped_while_idle": dropped,
            "answered_ping": pongs,
            "connect": latency_summary(times),
            "connects_per_s": round((connected - warm) / seconds, 1) if seconds else None,
            "rss_kib_before": rss_warm,
            f"rss_kib_at_{checkpoint}": rss_checkpoint,
            f"rss_kib_at_{total}": rss_full,
            f"kib_per_socket_at_{checkpoint}": round(
                (rss_checkpoint - rss_warm) / max(1, checkpoint - warm), 2
            ),
            f"kib_per_socket_at_{total}": round((rss_full - rss_warm) / max(1, total - warm), 2),
            "rss_kib_after_ping": rss_end,
        }

    sb, bare = await _with_servers(opts, pairs, measure, users=10, paired=False)
    per_cp = f"kib_per_socket_at_{checkpoint}"
    ratio = None
    if bare:
        ratio = {
            per_cp: _ratio(sb[per_cp], bare[per_cp]),
            "connect_p50": _ratio(sb["connect"]["p50_ms"], bare["connect"]["p50_ms"]),
            "connect_p99": _ratio(sb["connect"]["p99_ms"], bare["connect"]["p99_ms"]),
        }
    ok_all = sb["connected"] == opts.sockets and not sb["failures"] and not sb["dropped_while_idle"]
    targets = [
        _target(f"KiB RSS per idle socket at {checkpoint}", sb[per_cp], "<= 24", sb[per_cp] <= 24),
        _target(
            f"{opts.sockets} idle sockets held",
            f"{sb['connected']} connected, {sb['failures']} failed, "
            f"{sb['dropped_while_idle']} dropped, {sb['answered_ping']} answered a ping",
            "no errors",
            ok_all and sb["answered_ping"] == opts.sockets,
        ),
    ]
    params = {k: getattr(opts, k) for k in ("sockets", "checkpoint", "concurrency", "hold")}
    return {"params": params, "simbridge": sb, "bare": bare, "ratio": ratio, "targets": targets}


async def _ping_all(sockets: list[Ws], timeout: float = 15.0) -> int:
    """Send an application ping on every socket; count the pongs (bounded wait)."""
    got = 0
    done = asyncio.Event()

    def on_message(data: bytes) -> None:
        nonlocal got
        if data.replace(b" ", b"") == b'{"type":"pong"}':
            got += 1
            if got == len(sockets):
                done.set()

    for ws in sockets:
        ws.on_message = on_message
    for index, ws in enumerate(sockets):
        if not ws.closed.done():
            ws.send(b'{"type":"ping"}')
        if index % 500 == 499:
            await asyncio.sleep(0)  # let replies in while sending
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    return got


# --------------------------------------------------------------------------- storm


async def scenario_storm(opts: argparse.Namespace) -> dict[str, Any]:
    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        _quiet_gc()
        greeted_at: list[float] = []
        failures: list[str] = []
        sockets: list[Ws] = []

        async def one(url: str, device_id: int) -> None:
            try:
                ws = await open_ws(url, opts.client, 30.0)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(type(exc).__name__ + ": " + str(exc)[:120])
                return
            greeted_at.append(now() - t0)
            sockets.append(ws)
            if ws.greeting.get("device_id") != device_id:
                failures.append(f"greeting {ws.greeting!r}")

        start = Snapshot.take(server)
        t0 = now()
        await asyncio.gather(*(one(host_url(server, p), p.host_id) for p in setup.pairs))
        wall, server_cpu, loadgen_cpu = Snapshot.take(server).since(start)
        await close_all(sockets)
        return {
            "hosts": opts.hosts,
            "failures": len(failures),
            "failure_examples": sorted(set(failures))[:3],
            "all_greeted_s": round(max(greeted_at), 3) if greeted_at else None,
            "greeted": latency_summary(greeted_at),
            "server_cpu_us_per_connect": _per(server_cpu, len(greeted_at)),
            "loadgen_cpu_us_per_connect": _per(loadgen_cpu, len(greeted_at)),
        }

    sb, bare = await _with_servers(opts, opts.hosts, measure, users=10)
    ratio = {"all_greeted_s": _ratio(sb["all_greeted_s"], bare["all_greeted_s"])} if bare else None
    ok = sb["greeted"]["n"] == opts.hosts and not sb["failures"]
    sb["greeted_count"] = sb["greeted"]["n"]
    targets = [
        _target(
            f"{opts.hosts} hosts greeted (s)",
            sb["all_greeted_s"],
            f"<= {STORM_TARGET_S}",
            ok and _le(sb["all_greeted_s"], STORM_TARGET_S),
        )
    ]
    result = {
        "params": {"hosts": opts.hosts, "split": opts.split},
        "simbridge": sb,
        "bare": bare,
        "ratio": ratio,
        "targets": targets,
    }
    if opts.split:  # the same storm, split over two processes on one Redis, in the same run
        split = await scaleout.storm_split(opts)
        ok = split["greeted_count"] == opts.hosts and not split["failures"]
        result["split"] = split
        result["ratio"] = (ratio or {}) | {
            "split_vs_one_process": _ratio(split["all_greeted_s"], sb["all_greeted_s"])
        }
        targets.append(
            _target(
                f"{opts.hosts} hosts greeted, split over two processes (s)",
                split["all_greeted_s"],
                f"<= {STORM_TARGET_S}",
                ok and _le(split["all_greeted_s"], STORM_TARGET_S),
            )
        )
    return result


# --------------------------------------------------------------------------- rest


async def scenario_rest(opts: argparse.Namespace) -> dict[str, Any]:
    with Workdir(opts.keep) as work:
        server = work.start_simbridge(4, opts.server_env)
        log(f"simbridge pid {server.pid} port {server.port}, setting up {opts.hosts} hosts")
        setup = await setup_simbridge(server, opts.hosts, users=4)
        delivered = 0

        def on_command(data: bytes) -> None:
            nonlocal delivered
            delivered += 1

        hosts = []
        for info in setup.pairs:
            ws = await open_ws(host_url(server, info), opts.client)
            ws.on_message = on_command
            hosts.append(ws)
        bodies = [
            (
                info.token,
                json.dumps(
                    {"to_device_id": info.host_id, "sim": 1, "to": "+886912345678", "body": "hi"}
                ).encode(),
            )
            for info in setup.pairs
        ]
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        recording = False
        stop = False
        issued = 0

        async def worker(index: int) -> None:
            nonlocal issued
            conn = HttpConn("127.0.0.1", server.port)
            k = index
            try:
                while not stop:
                    token, body = bodies[k % len(bodies)]
                    k += 1
                    t0 = now()
                    try:
                        status, _ = await conn.request("POST", "/sms", body, token)
                    except Exception:  # noqa: BLE001 - counted as status 0
                        status = 0
                    issued += 1
                    statuses[status] = statuses.get(status, 0) + 1
                    if recording:
                        latencies.append(now() - t0)
            finally:
                conn.close()

        _quiet_gc()
        workers = [asyncio.create_task(worker(i)) for i in range(opts.concurrency)]
        await asyncio.sleep(opts.warmup)
        issued0, start = issued, Snapshot.take(server)
        recording = True
        await asyncio.sleep(opts.seconds)
        recording = False
        issued1, end = issued, Snapshot.take(server)
        stop = True
        await asyncio.wait(workers, timeout=15)
        ok_count = statuses.get(200, 0)
        for _ in range(200):  # bounded: the hosts may still be reading their last commands
            if delivered >= ok_count:
                break
            await asyncio.sleep(0.01)
        await close_all(hosts)
        wall, server_cpu, loadgen_cpu = end.since(start)
        count = issued1 - issued0
        sb = {
            "requests_per_s": round(count / wall, 1),
            "latency": latency_summary(latencies),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "commands_delivered": delivered,
            "server_cpu_us_per_request": _per(server_cpu, count),
            "loadgen_cpu_us_per_request": _per(loadgen_cpu, count),
            "server_cpu_pct": round(100 * server_cpu / wall, 1),
            "setup_seconds": round(setup.seconds, 2),
            "stop": server.stop(),
        }
    non_ok = sum(v for k, v in statuses.items() if k != 200)
    targets = [
        _target("POST /sms per s", sb["requests_per_s"], ">= 2000", sb["requests_per_s"] >= 2000),
        _target(
            "non-200 answers / undelivered",
            f"{non_ok} / {ok_count - delivered}",
            "0 / 0",
            non_ok == 0 and delivered == ok_count,
        ),
    ]
    params = {k: getattr(opts, k) for k in ("hosts", "concurrency", "warmup", "seconds")}
    return {"params": params, "simbridge": sb, "bare": None, "ratio": None, "targets": targets}


# --------------------------------------------------------------------------- history


def fill_history(db_path: Path, rows: int, setup: Setup) -> float:
    """Insert `rows` message_logs rows straight into SQLite, as the server would have logged
    them: commands client->host (one in ten from REST, from_device_id NULL) and events
    host->client, over the last 30 days, oldest first. Returns the seconds it took."""
    started = time.monotonic()
    span = timedelta(days=30)
    first = datetime.now(UTC) - span
    step = span / max(1, rows)
    pairs = setup.pairs

    def generate():
        for i in range(rows):
            pair = pairs[i % len(pairs)]
            created = (first + step * i).isoformat(sep=" ")
            req_id = uuid.UUID(int=i).hex
            if (i // len(pairs)) % 2 == 0:
                sender = None if i % 10 == 0 else pair.client_id
                payload = (
                    '{"type":"command","cmd":"SEND_SMS","sim":1,"to":"+886912345678",'
                    f'"body":"message {i}","req_id":"{req_id}"}}'
                )
                yield ("command", payload, created, sender, pair.host_id)
            else:
                payload = f'{{"type":"event","event":"SMS_SENT","status":"ok","req_id":"{req_id}"}}'
                yield ("event", payload, created, pair.host_id, pair.client_id)

    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA synchronous=OFF")
        with db:
            db.executemany(
                "INSERT INTO message_logs (msg_type, payload, created_at, from_device_id,"
                " to_device_id) VALUES (?, ?, ?, ?, ?)",
                generate(),
            )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.monotonic() - started


async def scenario_history(opts: argparse.Namespace) -> dict[str, Any]:
    with Workdir(opts.keep) as work:
        server = work.start_simbridge(4, opts.server_env, migrate_first=True)
        setup = await setup_simbridge(server, 4, users=1)
        server.stop()
        log(f"filling {opts.rows} message_logs rows")
        fill_seconds = fill_history(server.db_path, opts.rows, setup)
        log(f"filled in {fill_seconds:.1f} s; restarting the server")
        server = work.start_simbridge(4, opts.server_env)
        token = setup.pairs[0].token
        devices = [d for p in setup.pairs for d in (p.host_id, p.client_id)]
        conn = HttpConn("127.0.0.1", server.port)
        sizes: list[int] = []

        async def get(i: int) -> float:
            path = f"/history?device_id={devices[i % len(devices)]}&limit={opts.limit}"
            t0 = now()
            status, body = await conn.request("GET", path, None, token)
            elapsed = now() - t0
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status} {body[:200]!r}")
            sizes.append(len(json.loads(body)))
            return elapsed

        for i in range(min(50, opts.requests)):  # warm-up: caches, page cache
            await get(i)
        sizes.clear()
        _quiet_gc()
        start = Snapshot.take(server)
        latencies = [await get(i) for i in range(opts.requests)]
        wall, server_cpu, _ = Snapshot.take(server).since(start)
        conn.close()
        with sqlite3.connect(server.db_path) as db:
            stored = db.execute("SELECT COUNT(*) FROM message_logs").fetchone()[0]
        sb = {
            "rows_in_db": stored,
            "fill_seconds": round(fill_seconds, 1),
            "latency": latency_summary(latencies),
            "requests_per_s": round(len(latencies) / wall, 1),
            "server_cpu_us_per_request": _per(server_cpu, len(latencies)),
            "rows_per_answer_min": min(sizes) if sizes else None,
            "db_mib": round(server.db_path.stat().st_size / 2**20, 1),
            "stop": server.stop(),
        }
    targets = [
        _target(
            "GET /history p99 ms",
            sb["latency"]["p99_ms"],
            "<= 10",
            _le(sb["latency"]["p99_ms"], 10.0),
        ),
        _target(
            "full pages",
            sb["rows_per_answer_min"],
            f"== {opts.limit}",
            sb["rows_per_answer_min"] == opts.limit,
        ),
    ]
    params = {k: getattr(opts, k) for k in ("rows", "requests", "limit")}
    return {"params": params, "simbridge": sb, "bare": None, "ratio": None, "targets": targets}


# --------------------------------------------------------------------------- login-stall


async def scenario_login_stall(opts: argparse.Namespace) -> dict[str, Any]:
    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        conns = await _open_pairs(server, setup, opts)
        load = Paced(conns, opts.rate / 2)
        start = Snapshot.take(server)
        runner = asyncio.create_task(load.run(3600))
        await asyncio.sleep(0.2 if opts.quick else 0.5)  # warm-up, not counted
        base0 = now()
        await asyncio.sleep(opts.baseline)
        base1 = now()
        windows: list[tuple[float, float]] = []
        login_times: list[float] = []
        if server.kind == "simbridge":
            logins = [HttpConn("127.0.0.1", server.port) for _ in range(opts.logins)]
            for _ in range(opts.bursts):

                async def login(i: int) -> float:
                    name = setup.accounts[i % len(setup.accounts)][0]
                    t0 = now()
                    await logins[i].json(
                        "POST", "/auth/login", {"username": name, "password": PASSWORD}
                    )
                    return now() - t0

                w0 = now()
                login_times += await asyncio.gather(*(login(i) for i in range(opts.logins)))
                windows.append((w0, now()))
                await asyncio.sleep(0.3 if opts.quick else 1.0)
            for conn in logins:
                conn.close()
        load.stop_requested = True
        await runner
        Snapshot.take(server).since(start)
        lost = await load.settle(5.0)
        await _close_pairs(conns)
        base = latency_summary(load.one_way(base0, base1))
        during_samples = [x for w in windows for x in load.one_way(*w)]
        during_rtt = [x for w in windows for x in load.round_trips(*w)]
        out = {
            "baseline_one_way": base,
            "baseline_rtt": latency_summary(load.round_trips(base0, base1)),
            "lost": lost,
            "errors": load.errors,
            "error_examples": [e.decode(errors="replace") for e in load.error_examples],
        }
        if windows:
            during = latency_summary(during_samples)
            out |= {
                "during_logins_one_way": during,
                "during_logins_rtt": latency_summary(during_rtt),
                "p99_rise_ms": round(during["p99_ms"] - base["p99_ms"], 3)
                if during["n"] and base["n"]
                else None,
                "login": latency_summary(login_times),
                "login_windows_s": [round(b - a, 3) for a, b in windows],
            }
        return out

    sb, bare = await _with_servers(opts, opts.pairs, measure, users=2, bcrypt_rounds=12)
    ratio = None
    if bare:
        ratio = {
            "during_logins_p99_vs_bare_p99": _ratio(
                sb["during_logins_one_way"]["p99_ms"], bare["baseline_one_way"]["p99_ms"]
            ),
            "baseline_p99_vs_bare_p99": _ratio(
                sb["baseline_one_way"]["p99_ms"], bare["baseline_one_way"]["p99_ms"]
            ),
        }
    targets = [
        _target(
            "relay p99 rise ms",
            sb.get("p99_rise_ms"),
            "<= 10",
            _le(sb.get("p99_rise_ms"), 10.0),
        ),
        _target("lost", sb["lost"] + sb["errors"], "0", sb["lost"] + sb["errors"] == 0),
    ]
    params = {k: getattr(opts, k) for k in ("pairs", "rate", "logins", "bursts", "baseline")}
    params["bcrypt_rounds"] = 12
    return {"params": params, "simbridge": sb, "bare": bare, "ratio": ratio, "targets": targets}


# --------------------------------------------------------------------------- log-complete


async def scenario_log_complete(opts: argparse.Namespace) -> dict[str, Any]:
    trips = opts.messages // 2
    with Workdir(opts.keep) as work:
        server = work.start_simbridge(4, opts.server_env)
        setup = await setup_simbridge(server, opts.pairs, users=2)
        conns = await _open_pairs(server, setup, opts)
        load = RoundTrips(conns, opts.window, limit=trips)
        t0 = now()
        start = Snapshot.take(server)
        load.start()
        finished = await load.until_done(60.0)
        Snapshot.take(server).since(start)
        relay_seconds = now() - t0
        # SIGTERM with every socket still open; waited for in a thread, so that this loop
        # keeps answering the server's close frames meanwhile, as phones would
        stop = await asyncio.to_thread(server.stop, 30.0)
        await _close_pairs(conns)
        with sqlite3.connect(server.db_path) as db:
            total, distinct, commands, events, kept, distinct_seqs = db.execute(
                "SELECT COUNT(*),"
                " COUNT(DISTINCT msg_type || ':' || json_extract(payload, '$.req_id')),"
                " SUM(msg_type = 'command'), SUM(msg_type = 'event'),"
                " COUNT(seq), COUNT(DISTINCT to_device_id || ':' || seq) FROM message_logs"
            ).fetchone()
            states = dict(db.execute("SELECT state, COUNT(*) FROM commands GROUP BY state"))
        relayed = 2 * load.completed
        sb = {
            "messages": opts.messages,
            "relayed": relayed,
            "all_answered": finished,
            "relay_seconds": round(relay_seconds, 2),
            "rows": total,
            "distinct_rows": distinct,
            "commands": commands,
            "events": events,
            "kept_rows": kept,  # with a seq: the recipients' inboxes (contract §6)
            "distinct_seqs": distinct_seqs,
            "command_states": states,  # contract §7: one per command
            "errors": load.errors,
            "error_examples": [e.decode(errors="replace") for e in load.error_examples],
            "stop": stop,
        }
    ok = relayed == opts.messages and total == opts.messages and distinct == opts.messages
    targets = [
        _target(
            "rows after graceful stop",
            f"{total} rows, {distinct} distinct, {relayed} relayed",
            f"== {opts.messages}, no duplicates",
            ok,
        ),
        _target(
            "commands answered, by their states",
            f"{states.get('answered', 0)} of {trips}",
            f"== {trips}",
            states == {"answered": trips},
        ),
        _target("exit code after SIGTERM", stop["exit_code"], "0", stop["exit_code"] == 0),
    ]
    if opts.since:  # every frame was routed to a `since` socket: each is kept, with its seq
        inbox_ok = kept == total == distinct_seqs == opts.messages
        targets.insert(
            1,
            _target(
                "kept rows (inbox) after graceful stop",
                f"{kept} with a seq, {distinct_seqs} distinct",
                f"== {opts.messages}",
                inbox_ok,
            ),
        )
    params = {k: getattr(opts, k) for k in ("messages", "pairs", "window", "since")}
    return {"params": params, "simbridge": sb, "bare": None, "ratio": None, "targets": targets}


# --------------------------------------------------------------------------- soak


async def _at_rate(
    rate: float, seconds: float, job: Callable[[int], Awaitable[None]], stop: asyncio.Event
) -> int:
    """`await job(i)` for i in range(rate × seconds), the i-th due i / rate s after the start
    (a late job delays the next); none starts after `seconds` or once `stop` is set. Returns
    the number run."""
    t0 = now()
    count = int(rate * seconds)
    for i in range(count):
        delay = t0 + i / rate - now()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop.is_set() or now() - t0 >= seconds:
            return i
        await job(i)
    return count


async def _sample_rss(
    server: Server, t0: float, every: float, seconds: float, out: list[tuple[float, int]]
) -> None:
    """Append (seconds since `t0`, server RSS KiB) at t0, t0 + every, … before t0 + seconds;
    each sample also records what other processes used since the one before."""
    last = Snapshot.take(server)
    for k in range(max(1, math.ceil(seconds / every))):
        delay = t0 + k * every - now()
        if delay > 0:
            await asyncio.sleep(delay)
        out.append((now() - t0, server.rss_kib()))
        if k:
            snap = Snapshot.take(server)
            snap.since(last)
            last = snap


async def scenario_soak(opts: argparse.Namespace) -> dict[str, Any]:
    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        conns = await _open_pairs(server, setup, opts)
        paced, side = conns[: opts.pairs], conns[opts.pairs]  # side: REST and reconnects
        info = setup.pairs[opts.pairs]
        sms = json.dumps(
            {"to_device_id": info.host_id, "sim": 1, "to": "+886912345678", "body": "soak"}
        ).encode()
        statuses: dict[int, int] = {}
        side_counts = {"commands": 0, "events": 0, "other": 0, "reconnects": 0}
        failures: list[str] = []

        def on_host(data: bytes) -> None:  # the side host answers each REST command
            frame = json.loads(data)
            if frame.get("type") == "command":
                side_counts["commands"] += 1
                side.host.send(event_frame(frame["req_id"]))
            else:  # e.g. target_offline while its client reconnects
                side_counts["other"] += 1

        def on_client(data: bytes) -> None:
            side_counts["events" if json.loads(data).get("type") == "event" else "other"] += 1

        side.host.on_message, side.client.on_message = on_host, on_client
        http = HttpConn("127.0.0.1", server.port)

        async def post(_: int) -> None:
            try:
                status = (await http.request("POST", "/sms", sms, info.token))[0]
            except Exception:  # noqa: BLE001 - counted as status 0
                status = 0
            statuses[status] = statuses.get(status, 0) + 1

        async def reconnect(_: int) -> None:
            await side.client.close()
            try:
                ws = await open_checked(client_url(server, info), info.client_id, opts.client)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(type(exc).__name__ + ": " + str(exc)[:120])
                return
            ws.on_message = on_client
            side.client = ws
            side_counts["reconnects"] += 1

        # the side load runs through warm-up and measured phase alike (bounded: +30 s)
        span, side_stop = opts.warmup + opts.seconds + 30, asyncio.Event()
        side_tasks = [
            asyncio.create_task(_at_rate(rate, span, job, side_stop))
            for rate, job in ((opts.sms_rate, post), (opts.reconnect_rate, reconnect))
            if rate > 0
        ]
        rss_before = server.rss_kib()
        warm = await _paced_phase(paced, opts.rate, 0.0, opts.warmup)  # the warm-up
        load = Paced(paced, opts.rate / 2)  # a round trip relays two messages
        samples: list[tuple[float, int]] = []
        start = Snapshot.take(server)
        t0 = now()
        sampler = asyncio.create_task(
            _sample_rss(server, t0, opts.sample_every, opts.seconds, samples)
        )
        await load.run(opts.seconds)
        await asyncio.wait([sampler], timeout=opts.sample_every + 5)
        sampler.cancel()
        samples.append((now() - t0, server.rss_kib()))
        wall, server_cpu, loadgen_cpu = Snapshot.take(server).since(start)
        side_stop.set()
        lost = await load.settle(5.0)
        await asyncio.wait(side_tasks, timeout=15)
        http.close()
        await _close_pairs(conns)
        kib = [k for _, k in samples]
        rss_start, rss_end = kib[0], kib[-1]
        slope = None
        if len(samples) > 1:
            fit = statistics.linear_regression([t / 60 for t, _ in samples], kib)
            slope = round(fit.slope, 1)
        window = min(60.0, opts.seconds / 5)  # latency at the start and at the end
        end = t0 + opts.seconds
        return {
            "offered_msgs_per_s": opts.rate,
            "rss_before_warmup_kib": rss_before,
            "rss_start_kib": rss_start,
            "rss_end_kib": rss_end,
            "rss_max_kib": max(kib),
            "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
            "rss_slope_kib_per_min": slope,
            "rss_samples": [[round(t, 1), k] for t, k in samples],
            "commands_sent": load.sent,
            "relayed": len(load.samples),
            "lost": lost,
            "errors": load.errors,
            "error_examples": [e.decode(errors="replace") for e in load.error_examples],
            "warmup_lost": warm.sent - warm.answered,
            "one_way": latency_summary(load.one_way()),
            "window_s": window,
            "one_way_first": latency_summary(load.one_way(t0, t0 + window)),
            "one_way_last": latency_summary(load.one_way(end - window, end)),
            "loadgen_max_send_lag_ms": round(load.max_lag * 1000, 3),
            "server_cpu_pct": round(100 * server_cpu / wall, 1),
            "loadgen_cpu_pct": round(100 * loadgen_cpu / wall, 1),
            "sms_statuses": {str(k): v for k, v in sorted(statuses.items())},
            "side": side_counts,
            "reconnect_failures": len(failures),
            "reconnect_failure_examples": sorted(set(failures))[:3],
        }

    sb, _ = await _with_servers(opts, opts.pairs + 1, measure, bare=False)
    growth = sb["rss_growth_pct"]
    targets = [
        _target("rss_growth_pct", growth, "< 5 %", growth < 5),
        _target("lost", sb["lost"] + sb["errors"], "0", sb["lost"] == 0 and sb["errors"] == 0),
    ]
    names = ("pairs", "rate", "warmup", "seconds", "sample_every", "sms_rate", "reconnect_rate")
    params = {k: getattr(opts, k) for k in names}
    return {"params": params, "simbridge": sb, "bare": None, "ratio": None, "targets": targets}


RUNNERS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "connections": scenario_connections,
    "storm": scenario_storm,
    "rest": scenario_rest,
    "history": scenario_history,
    "login-stall": scenario_login_stall,
    "log-complete": scenario_log_complete,
    "soak": scenario_soak,
    **delivery.RUNNERS,
    **operations.RUNNERS,
    **scaleout.RUNNERS,
}


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gib = round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(result: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(metric, SimBridge, bare relay, ratio) rows of one scenario's result. A row whose
    metric is also a target's name gets that target's columns in the table."""
    if is_scale_out(result):
        return scale_out_rows(result)
    sb, bare, name = result.get("simbridge") or {}, result.get("bare") or {}, result["scenario"]

    def get(d: dict, *path: str) -> Any:
        for key in path:
            if not isinstance(d, dict):
                return None
            d = d.get(key)
        return d

    def row(label: str, *path: str, ratio: bool = True) -> tuple[str, Any, Any, Any]:
        a, b = get(sb, *path), get(bare, *path) if bare else None
        r = _ratio(a, b) if ratio and isinstance(a, int | float) and b else None
        return (label, a, b, r)

    if name == "throughput":
        return [
            row("round trips/s", "round_trips_per_s"),
            row("RTT p50 ms", "rtt", "p50_ms"),
            row("RTT p99 ms", "rtt", "p99_ms"),
            row("server CPU µs/msg", "server_cpu_us_per_msg"),
            row("load gen CPU µs/msg", "loadgen_cpu_us_per_msg"),
        ]
    if name == "latency":
        return [
            row("one-way p50 ms", "one_way", "p50_ms"),
            row("one-way p90 ms", "one_way", "p90_ms"),
            row("one-way p99 ms", "one_way", "p99_ms"),
            row("one-way max ms", "one_way", "max_ms"),
            row("RTT p99 ms", "rtt", "p99_ms"),
            row("lost", "lost", ratio=False),
        ]
    if name == "connections":
        cp, full = result["params"]["checkpoint"], result["params"]["sockets"]
        return [
            row(f"KiB RSS per idle socket at {cp}", f"kib_per_socket_at_{cp}"),
            row(f"KiB RSS per idle socket at {full}", f"kib_per_socket_at_{full}"),
            row("connect p50 ms", "connect", "p50_ms"),
            row("connect p99 ms", "connect", "p99_ms"),
            row("connects/s", "connects_per_s"),
        ]
    if name == "storm":
        hosts = result["params"]["hosts"]
        return [
            row(f"{hosts} hosts greeted (s)", "all_greeted_s"),
            row("greeted p50 ms", "greeted", "p50_ms"),
            row("server CPU µs/connect", "server_cpu_us_per_connect"),
        ]
    if name == "rest":
        return [
            row("POST /sms per s", "requests_per_s"),
            row("p50 ms", "latency", "p50_ms"),
            row("p99 ms", "latency", "p99_ms"),
            row("server CPU µs/request", "server_cpu_us_per_request"),
        ]
    if name == "history":
        return [
            row("rows in DB", "rows_in_db"),
            row("GET /history p50 ms", "latency", "p50_ms"),
            row("GET /history p99 ms", "latency", "p99_ms"),
            row("GET /history max ms", "latency", "max_ms"),
        ]
    if name == "login-stall":
        b = get(bare, "baseline_one_way", "p99_ms") if bare else None
        before = get(sb, "baseline_one_way", "p99_ms")
        during = get(sb, "during_logins_one_way", "p99_ms")
        return [
            ("one-way p99 ms, before", before, b, _ratio(before, b)),
            ("one-way p99 ms, during logins", during, b, _ratio(during, b)),
            ("relay p99 rise ms", get(sb, "p99_rise_ms"), None, None),
            ("login p50 ms (bcrypt 12)", get(sb, "login", "p50_ms"), None, None),
        ]
    if name == "log-complete":
        return [row("messages relayed", "relayed"), row("rows after SIGTERM", "rows")]
    if name == "waits":
        n, wait = get(sb, "requests"), get(result, "params", "wait")
        return [
            row(f"{_fmt(n)} wait={wait} requests opened (s)", "open_s"),
            row("all held: commands at the host after (s)", "all_held_s"),
            row("server CPU µs per request", "server_cpu_us_per_request"),
            row("RSS KiB before", "rss_kib_before"),
            row("RSS KiB held", "rss_kib_held"),
            row(f"KiB RSS per held wait={wait} request", "kib_per_held_request"),
            row("one-way p50 ms, before", "one_way_before", "p50_ms"),
            row("one-way p50 ms, held", "one_way_held", "p50_ms"),
            row("one-way p99 ms, before", "one_way_before", "p99_ms"),
            row(f"relay one-way p99 ms with {n} requests held", "one_way_held", "p99_ms"),
            row("one-way max ms, before", "one_way_before", "max_ms"),
            row("one-way max ms, held", "one_way_held", "max_ms"),
            row("server CPU %, before", "server_cpu_pct_before"),
            row("server CPU %, held", "server_cpu_pct_held"),
            row("host answered after (s)", "answers_sent_after_s"),
            row("all replied after the answers (s)", "all_replied_after_answers_s"),
            row("last reply after the first request (s)", "last_reply_after_first_request_s"),
        ]
    if name == "soak":
        window = _fmt(get(sb, "window_s"))
        return [
            row("RSS KiB after warm-up", "rss_start_kib"),
            row("RSS KiB at end", "rss_end_kib"),
            row("RSS KiB max", "rss_max_kib"),
            row("rss_growth_pct", "rss_growth_pct"),
            row("RSS slope KiB/min", "rss_slope_kib_per_min"),
            row(f"one-way p99 ms, first {window} s", "one_way_first", "p99_ms"),
            row(f"one-way p99 ms, last {window} s", "one_way_last", "p99_ms"),
            row("messages relayed", "relayed"),
            row("lost", "lost", ratio=False),
        ]
    return []


HEADER = "| scenario | metric | SimBridge | bare relay | ratio | target | met |"
SCALE_OUT_HEADER = "| scenario | metric | measured | one process | ratio | target | met |"


def is_scale_out(result: dict[str, Any]) -> bool:
    if result["scenario"] == "storm":
        return bool((result.get("params") or {}).get("split"))
    return result["scenario"] in SCALE_OUT


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _per_frame(leg: dict[str, Any]) -> str | None:
    """`evalsha DELIVER 1, hget 0.5`: what MONITOR counted per frame (background left out)."""
    counts = _get(leg, "monitor", "per_frame")
    if not counts:
        return None
    shown = [
        f"{name} {_fmt(n)}" for name, n in counts.items() if name.split()[0] not in BACKGROUND and n
    ]
    return ", ".join(shown) or "none"


def scale_out_rows(result: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(metric, measured, one process, ratio) rows of a scale-out scenario: the measured column
    is the two processes (or the workers), the reference one process with the memory broker."""
    name, sb = result["scenario"], result.get("simbridge") or {}
    one, same = result.get("one_process") or {}, result.get("same_process") or {}

    def vs(label: str, a: Any, b: Any) -> tuple[str, Any, Any, Any]:
        r = _ratio(a, b) if isinstance(a, int | float) and isinstance(b, int | float) else None
        return (label, a, b, r)

    def only(label: str, value: Any) -> tuple[str, Any, Any, Any]:
        return (label, value, None, None)

    def both(label: str, *path: str, leg: dict[str, Any] | None = None) -> tuple:
        return vs(label, _get(sb if leg is None else leg, *path), _get(one, *path))

    if name == "cross-throughput":
        x, s = "cross_process_frame", "same_process_frame"
        return [
            both("round trips/s, cross-process", "round_trips_per_s"),
            both("round trips/s, same process (Redis broker)", "round_trips_per_s", leg=same),
            both("RTT p50 ms, cross-process", "rtt", "p50_ms"),
            both("RTT p99 ms, cross-process", "rtt", "p99_ms"),
            both("server CPU µs/msg, cross-process (A+B)", "server_cpu_us_per_msg"),
            both("server CPU µs/msg, same process (A+B)", "server_cpu_us_per_msg", leg=same),
            only(
                "Redis CPU µs per cross-process frame", _get(sb, "redis", f"redis_cpu_us_per_{x}")
            ),
            only("Redis CPU % of a core, cross-process", _get(sb, "redis", "cpu_pct")),
            only("Redis commands per cross-process frame", scaleout.commands_per_frame(sb, x)),
            only("commands per cross-process frame, by name", _per_frame(sb)),
            only("EVALSHA per cross-process frame (INFO)", _get(sb, "redis", f"evalsha_per_{x}")),
            only(
                "Redis read events (client writes) per cross-process frame",
                _get(sb, "redis", f"read_events_per_{x}"),
            ),
            only("Redis commands per same-process frame", scaleout.commands_per_frame(same, s)),
            only("commands per same-process frame, by name", _per_frame(same)),
            only(
                "Redis read events per same-process frame",
                _get(same, "redis", f"read_events_per_{s}"),
            ),
        ]
    if name == "cross-latency":
        x = "cross_process_frame"
        rows = [
            both(f"one-way {q} ms, cross-process", "one_way", f"{q}_ms")
            for q in ("p50", "p90", "p99", "max")
        ]
        return [
            *rows,
            both("one-way p50 ms, same process (Redis broker)", "one_way", "p50_ms", leg=same),
            both("one-way p99 ms, same process (Redis broker)", "one_way", "p99_ms", leg=same),
            both("RTT p99 ms, cross-process", "rtt", "p99_ms"),
            only("one-way p50 added ms", _get(result, "added_ms", "p50")),
            only("one-way p99 added ms", _get(result, "added_ms", "p99")),
            both("server CPU µs/msg, cross-process (A+B)", "server_cpu_us_per_msg"),
            only("Redis commands per cross-process frame", scaleout.commands_per_frame(sb, x)),
            only(
                "Redis read events (client writes) per cross-process frame",
                _get(sb, "redis", f"read_events_per_{x}"),
            ),
            only(
                "Redis CPU µs per cross-process frame", _get(sb, "redis", f"redis_cpu_us_per_{x}")
            ),
        ]
    if name == "workers":
        n = _get(result, "params", "workers")
        return [
            both(f"relayed msgs/s, {n} workers (Redis broker)", "relayed_msgs_per_s"),
            both("RTT p50 ms", "rtt", "p50_ms"),
            both("RTT p99 ms", "rtt", "p99_ms"),
            both("server CPU µs/msg (every process)", "server_cpu_us_per_msg"),
            both("server CPU % of a core (every process)", "server_cpu_pct"),
            only("share of frames between workers", _get(sb, "cross_worker_share")),
            only("Redis commands per frame", scaleout.commands_per_frame(sb, "frame")),
            only("commands per frame, by name", _per_frame(sb)),
            only("Redis CPU µs per frame", _get(sb, "redis", "redis_cpu_us_per_frame")),
            only("Redis CPU % of a core", _get(sb, "redis", "cpu_pct")),
        ]
    if name == "presence":
        return [
            only(
                f"{_get(sb, 'hosts')} hosts on A online on B after (s)", _get(sb, "online_on_b_s")
            ),
            only("first host offline on B after kill -9 (s)", _get(sb, "first_offline_s")),
            only("presence expiry after kill -9 (s)", _get(sb, "all_offline_s")),
        ]
    if name == "reclaim":
        n = _get(sb, "sockets")
        return [
            only("Redis down (s)", _get(sb, "down_s")),
            only("Redis answering after its start (s)", _get(sb, "redis_up_s")),
            only(
                f"re-claim of {n} sockets after Redis returns (s)", _get(sb, "keys_back_after_up_s")
            ),
            only(
                "all online on B, after Redis start (s)", _get(sb, "all_online_on_b_after_start_s")
            ),
            only("sockets dropped", _get(sb, "sockets_dropped")),
        ]
    if name == "storm":
        split, hosts = result.get("split") or {}, _get(result, "params", "hosts")
        return [
            vs(
                f"{hosts} hosts greeted, split over two processes (s)",
                _get(split, "all_greeted_s"),
                _get(sb, "all_greeted_s"),
            ),
            only(f"{hosts} hosts greeted (s)", _get(sb, "all_greeted_s")),
            only("bare relay: all greeted (s)", _get(result, "bare", "all_greeted_s")),
            vs(
                "greeted p50 ms, split",
                _get(split, "greeted", "p50_ms"),
                _get(sb, "greeted", "p50_ms"),
            ),
            vs(
                "server CPU µs/connect, split (A+B)",
                _get(split, "server_cpu_us_per_connect"),
                _get(sb, "server_cpu_us_per_connect"),
            ),
            only("Redis commands per connect", scaleout.commands_per_frame(split, "connect")),
            only("commands per connect, by name", _per_frame(split)),
            only("Redis CPU µs per connect", _get(split, "redis", "redis_cpu_us_per_connect")),
        ]
    if name == "cross-soak":
        window = _fmt(_get(sb, "window_s"))
        return [
            only(
                "RSS KiB of A, after warm-up / at end",
                f"{_fmt(_get(sb, 'rss_a_start_kib'))} / {_fmt(_get(sb, 'rss_a_end_kib'))}",
            ),
            only(
                "RSS KiB of B, after warm-up / at end",
                f"{_fmt(_get(sb, 'rss_b_start_kib'))} / {_fmt(_get(sb, 'rss_b_end_kib'))}",
            ),
            only("RSS growth % of A", _get(sb, "rss_a_growth_pct")),
            only("RSS growth % of B", _get(sb, "rss_b_growth_pct")),
            only(
                "RSS slope KiB/min, A / B",
                " / ".join(_fmt(_get(sb, f"rss_{x}_slope_kib_per_min")) for x in "ab"),
            ),
            only(f"one-way p99 ms, first {window} s", _get(sb, "one_way_first", "p99_ms")),
            only(f"one-way p99 ms, last {window} s", _get(sb, "one_way_last", "p99_ms")),
            only("cross-process messages relayed", _get(sb, "relayed")),
            only("Redis memory growth KiB", _get(sb, "redis", "used_memory_kib_delta")),
        ]
    return []


def markdown_table(results: list[dict[str, Any]], header: str = HEADER) -> str:
    lines = [header, "|---|---|---:|---:|---:|---|---|"]
    for result in results:
        name = result["scenario"]
        if name == "storm" and (result.get("params") or {}).get("split"):
            name = "storm --split"
        if "error" in result:
            lines.append(f"| {name} | error: {result['error']} | | | | | no |")
            continue
        targets = {t["name"]: t for t in result.get("targets", [])}
        for label, a, b, r in table_rows(result):
            t = targets.pop(label, None)
            goal, met = (t["target"], _met(t["ok"])) if t else ("", "")
            cells = [name, label, _fmt(a), _fmt(b), _fmt(r), goal, met]
            lines.append("| " + " | ".join(cells) + " |")
        for t in targets.values():
            lines.append(
                f"| {name} | {t['name']} | {_fmt(t['measured'])} | | | {t['target']} | "
                f"{_met(t['ok'])} |"
            )
    return "\n".join(lines)


def _met(ok: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[ok]


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        choices=[*SCENARIOS, *RUNS, "table"],
        help="a scenario, `all`, `scale-out` (its scenarios and the split storm), or "
        "`table FILE...` (the markdown table of saved JSON lines)",
    )
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--client",
        choices=loadgen.CLIENTS,
        default=loadgen.default_client(),
        help="WebSocket client of the load generator (default: picows if installed)",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare relay baseline")
    parser.add_argument(
        "--since",
        action="store_true",
        help="clients on `since=0` sockets (contract §6: frames with seqs, replay first)",
    )
    parser.add_argument(
        "--ops",
        action="store_true",
        help="throughput with what an operator turns on: /metrics scraped each second and a "
        "webhook per account with a receiver (bench/operations.py)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument(
        "--bare-backlog",
        type=int,
        default=2048,
        help="listen backlog of the bare relay (default 2048; asyncio's and Sanic's is 100)",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to this long for other processes to go quiet",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for SimBridge (repeatable), e.g. SIMBRIDGE_LOG_LEVEL=WARNING",
    )
    scale = parser.add_argument_group("scale-out (several processes on one Redis)")
    scale.add_argument(
        "--split",
        action="store_true",
        help="storm: also the same storm split over two processes (Redis broker), same run",
    )
    scale.add_argument(
        "--redis",
        default="private",
        metavar="private|URL",
        help="the Redis of the scale-out scenarios: a redis-server of the run's own, on a free "
        "port (default: INFO commandstats and CPU are server-wide, so a shared server's other "
        f"users would be counted), or a URL such as {SHARED_REDIS_URL} (keys under a prefix of "
        "the run's own, deleted afterwards). `reclaim` always uses a private one",
    )
    scale.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the database the processes share: one SQLite file (default) or a fresh "
        "PostgreSQL database, dropped afterwards",
    )
    sizes = parser.add_argument_group("sizes (defaults depend on the scenario and --quick)")
    for name in sorted({k for d in DEFAULTS.values() for k in d}):
        floats = ("warmup", "seconds", "hold", "baseline", "rate", "sample_every", "down")
        kind = float if name in floats or name.endswith("_rate") else int
        sizes.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    return parser.parse_args(argv)


def options_for(scenario: str, args: argparse.Namespace) -> argparse.Namespace:
    values = dict(DEFAULTS[scenario])
    if args.quick:
        values.update(QUICK[scenario])
    for name in values:
        given = getattr(args, name)
        if given is not None:
            values[name] = given
    env = dict(OPERATIONS_ENV) if args.ops else {}
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return argparse.Namespace(
        **values,
        client=args.client,
        no_bare=args.no_bare,
        bare_backlog=args.bare_backlog,
        keep=args.keep,
        server_env=env,
        quick=args.quick,
        split=args.split,
        since=args.since,
        ops=args.ops,
        redis=args.redis,
        db=args.db,
    )


async def run_one(
    scenario: str, args: argparse.Namespace, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    opts = options_for(scenario, args)
    for name, value in (overrides or {}).items():
        setattr(opts, name, value)
    log(f"--- {scenario}{' --split' if scenario == 'storm' and opts.split else ''} ---")
    idle = await wait_until_idle(args.idle_wait) if args.idle_wait else None
    OTHER_CPU.clear()
    started = time.monotonic()
    try:
        # 600 s per scenario; the soak's own length comes on top
        extra = opts.warmup + opts.seconds if scenario in ("soak", "cross-soak") else 0.0
        result = await asyncio.wait_for(RUNNERS[scenario](opts), 600 + extra)
    except Exception as exc:  # noqa: BLE001 - one failed scenario must not hide the others
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    result = {"scenario": scenario, **result}
    result["client"] = opts.client
    result["ok"] = "error" not in result and all(
        t["ok"] for t in result.get("targets", []) if t["ok"] is not None
    )
    result["seconds"] = round(time.monotonic() - started, 1)
    # CPU (% of one core) that processes other than the server and this one used while
    # measuring: well above 0 means the figures were taken on a shared, busy machine.
    result["other_cpu_pct_max"] = round(max(OTHER_CPU), 1) if OTHER_CPU else None
    if idle is not None:
        result["other_cpu_pct_before"] = round(idle, 1)
    if OTHER_CPU and max(OTHER_CPU) > 15:
        log(f"warning: other processes used up to {max(OTHER_CPU):.0f} % of a core meanwhile")
    return result


async def amain(args: argparse.Namespace) -> int:
    raise_fd_limit()
    scenarios = RUNS.get(args.scenario, [(args.scenario, {})])
    results = []
    for scenario, overrides in scenarios:
        result = await run_one(scenario, args, overrides)
        if args.scenario not in RUNS:
            result["machine"] = machine()
        print(json.dumps(result, ensure_ascii=False), flush=True)  # noqa: T201
        results.append(result)
    if args.scenario in RUNS:
        info = machine()
        print(json.dumps({"scenario": "machine", **info}), flush=True)  # noqa: T201
        print(  # noqa: T201
            f"\nMachine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB, "
            f"Linux {info['kernel']}, Python {info['python']}; commit {info['commit']}; "
            f"{info['date']}; load generator client: {args.client}\n"
        )
        print_tables(results)
    return 1 if any("error" in r for r in results) else 0


def table_from_files(paths: list[str]) -> int:
    """Print the markdown table of JSON lines saved from earlier runs (stdin if no file)."""
    lines: list[str] = []
    for path in paths or ["-"]:
        lines += (sys.stdin.read() if path == "-" else Path(path).read_text()).splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    info = [r for r in results if r.get("scenario") == "machine"]
    results = [r for r in results if r.get("scenario") in RUNNERS]
    if info:
        results = [{**r, "machine": r.get("machine") or info[-1]} for r in results]
    print_tables(results)
    return 0


def print_tables(results: list[dict[str, Any]]) -> None:
    """The table of the one-process scenarios, then that of the scale-out ones."""
    single = [r for r in results if not is_scale_out(r)]
    scale = [r for r in results if is_scale_out(r)]
    if single:
        print(markdown_table(single))  # noqa: T201
    if single and scale:
        print()  # noqa: T201
    if scale:
        print(markdown_table(scale, SCALE_OUT_HEADER))  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scenario == "table":
        return table_from_files(args.files)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
