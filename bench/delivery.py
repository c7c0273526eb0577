"""Delivery scenarios: what a `since` socket costs (contract §6), what a waiting REST command
costs (contract §7).

- `replay`: `--frames` events sent to an offline client, then the client connects with
  `since=0`, `--rounds` times: seconds from the start of its handshake until the last kept frame
  arrived (the greeting, the presence of its host and the whole replay in between).
- `waits`: `--requests` concurrent `GET /sims?host_device_id=H&wait=--wait`, each on a
  connection of its own, to an online host that reads their commands and does not answer.
  Server RSS per held request (from before they were opened to when the host had every
  command), the `latency` load's one-way p99 before and while they are held, then the host
  answers every command and each request must get 200 `answered`, all within the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import Snapshot, close_pairs, le, paced_phase, per, quiet_gc, ratio, target
from bench.loadgen import Ws, event_frame, latency_summary, now, open_ws
from bench.servers import (
    Server,
    Setup,
    client_url,
    close_all,
    connect_pairs,
    host_url,
    log,
    open_checked,
    raise_fd_limit,
)

EVENT = orjson.dumps({"type": "event", "event": "SMS_RECEIVED", "from": "+15550100", "body": "x"})
REPLAY_TARGET_S = 0.2  # 1,000 kept frames (the delivery issue)


async def _send_to_offline_client(host: Ws, frames: int, timeout: float = 60.0) -> None:
    """Send `frames` events; each is answered with target_offline (and kept for the client)."""
    answered = 0
    done = asyncio.get_running_loop().create_future()

    def on_message(data: bytes) -> None:
        nonlocal answered
        answered += 1
        if answered == frames and not done.done():
            done.set_result(None)

    host.on_message = on_message
    for _ in range(frames):
        host.send(EVENT)
    await asyncio.wait_for(done, timeout)


async def _replay_once(server: Server, setup: Setup, frames: int, client: str) -> float:
    """Seconds from the handshake's start until the client's last replayed frame arrived."""
    pair = setup.pairs[0]
    started = now()
    ws = await open_ws(f"{client_url(server, pair)}&since=0", client, 30.0)
    last = asyncio.get_running_loop().create_future()

    def on_message(data: bytes) -> None:
        frame = orjson.loads(data)
        if frame.get("seq") == frames and not last.done():
            last.set_result(now())

    ws.on_message = on_message
    try:
        return float(await asyncio.wait_for(last, 30.0)) - started
    finally:
        await ws.close()


async def scenario_replay(opts: argparse.Namespace) -> dict[str, Any]:
    from bench.run import _with_servers  # the runner's server set-up (it imports this module)

    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        pair = setup.pairs[0]
        host = await open_ws(host_url(server, pair), opts.client, 30.0)
        try:
            await _send_to_offline_client(host, opts.frames)
        finally:
            await host.close()
        log(f"{opts.frames} frames kept for client {pair.client_id}; replaying")
        times = [await _replay_once(server, setup, opts.frames, opts.client)]
        for _ in range(opts.rounds - 1):  # bounded: --rounds
            times.append(await _replay_once(server, setup, opts.frames, opts.client))
        return {
            "frames": opts.frames,
            "rounds": opts.rounds,
            "replay_s_median": round(statistics.median(times), 4),
            "replay_s_max": round(max(times), 4),
        }

    sb, _ = await _with_servers(opts, 1, measure, users=1, bare=False)
    return {
        "params": {"frames": opts.frames, "rounds": opts.rounds},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": [
            target(
                f"replay of {opts.frames} kept frames, slowest of {opts.rounds} (s)",
                sb["replay_s_max"],
                f"<= {REPLAY_TARGET_S}",
                le(sb["replay_s_max"], REPLAY_TARGET_S),
            )
        ],
    }


# --------------------------------------------------------------------------- waits

WAIT_KIB_TARGET = 50.0  # KiB of server RSS per held `wait=30` request (the §7 issue)


class _Waiting(asyncio.Protocol):
    """One `GET /sims?…&wait=S` on a connection of its own: written as soon as the connection
    is made, never a second one; the reply (status, body) is kept and the connection closed."""

    def __init__(self, request: bytes, finished: Callable[[], None]) -> None:
        self.request = request
        self.finished = finished
        self.buffer = bytearray()
        self.reply: tuple[int, bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.reply is not None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        self.reply = (int(head[9:12]), bytes(self.buffer[end + 4 : end + 4 + length]))
        self.finished()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.reply is None:
            self.finished()  # closed without a reply: counted as such

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


class _WaitingRequests:
    """`count` waiting requests, each on its own connection, opened `concurrency` at a time
    (the server's listen backlog is finite); nothing here waits for their replies."""

    def __init__(self, server: Server, path: str, token: str) -> None:
        self.port = server.port
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.requests: list[_Waiting] = []
        self.finished = 0
        self.connect_errors: list[str] = []

    def _finished(self) -> None:
        self.finished += 1

    async def open(self, count: int, concurrency: int) -> None:
        loop = asyncio.get_running_loop()
        cursor = iter(range(count))

        async def worker() -> None:
            for _ in cursor:
                try:
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: _Waiting(self.request, self._finished), "127.0.0.1", self.port
                        ),
                        10.0,
                    )
                except (OSError, TimeoutError) as exc:
                    self.connect_errors.append(f"{type(exc).__name__}: {exc}"[:120])
                    continue
                self.requests.append(proto)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def until_finished(self, deadline: float) -> bool:
        """Wait (until `deadline`, a `now()` time) for every request's reply or close."""
        while self.finished < len(self.requests) and now() < deadline:
            await asyncio.sleep(0.02)
        return self.finished >= len(self.requests)

    def close(self) -> None:
        for proto in self.requests:
            proto.close()


async def _until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll (every 10 ms, until `deadline`, a `now()` time) until `condition()` holds."""
    while not condition() and now() < deadline:
        await asyncio.sleep(0.01)
    return condition()


def _no_effect(before: float | None, held: float | None) -> bool | None:
    """The reading of "no effect on relay p99": p99 while held ≤ max(1.5 × before,
    before + 1 ms)."""
    if before is None or held is None:
        return None
    return held <= max(1.5 * before, before + 1.0)


async def scenario_waits(opts: argparse.Namespace) -> dict[str, Any]:
    """`--requests` concurrent `GET /sims?…&wait=S` held by a host that does not answer:
    server RSS per held request, relay p99 before and while they are held, then every one
    answered by its host."""
    from bench.run import _with_servers  # the runner's server set-up (it imports this module)

    raise_fd_limit()
    count, wait = opts.requests, opts.wait
    settle = 0.3 if opts.quick else 1.0

    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        paced_pairs, side = setup.pairs[: opts.pairs], setup.pairs[opts.pairs]
        conns = await connect_pairs(server, paced_pairs, opts.client)
        host = await open_checked(host_url(server, side), side.host_id, opts.client)
        commands: list[str] = []
        host_other: list[bytes] = []

        def on_host(data: bytes) -> None:  # the waiting host reads its commands, no more
            frame = orjson.loads(data)
            if frame.get("type") == "command":
                commands.append(frame["req_id"])
            elif len(host_other) < 10_000:
                host_other.append(data[:200])

        host.on_message = on_host
        quiet_gc()

        log(f"baseline: the latency load at {opts.rate:g} msg/s over {opts.pairs} pairs")
        start = Snapshot.take(server)
        base = await paced_phase(conns, opts.rate, opts.warmup, opts.seconds)
        _, base_cpu, _ = Snapshot.take(server).since(start)
        base_wall = opts.warmup + opts.seconds
        await asyncio.sleep(settle)
        rss_before = server.rss_kib()

        path = f"/sims?host_device_id={side.host_id}&wait={wait}"
        waiting = _WaitingRequests(server, path, side.token)
        log(f"opening {count} `GET {path}`, {opts.concurrency} at a time")
        opened_at = now()
        start = Snapshot.take(server)
        await waiting.open(count, opts.concurrency)
        open_s = now() - opened_at
        sent = len(waiting.requests)
        held_ok = await _until(lambda: len(commands) >= sent, opened_at + wait / 2)
        all_held_s = now() - opened_at
        _, open_cpu, _ = Snapshot.take(server).since(start)
        log(
            f"{len(commands)} commands at the host {all_held_s:.2f} s after the first request "
            f"({waiting.finished} replied early, {len(waiting.connect_errors)} connect errors)"
        )
        await asyncio.sleep(settle)
        rss_held = server.rss_kib()
        held_at_rss = len(commands) - waiting.finished
        quiet_gc()  # this process now holds `count` connections: keep its own pauses short

        # the same latency load while they are held, cut short if the wait would run out
        budget = wait - (now() - opened_at) - 2 * settle - 5.0
        held_seconds = max(0.0, min(opts.seconds, budget - opts.warmup))
        log(f"the latency load again for {held_seconds:.1f} s, {held_at_rss} requests held")
        start = Snapshot.take(server)
        held = await paced_phase(conns, opts.rate, opts.warmup, held_seconds)
        _, held_cpu, _ = Snapshot.take(server).since(start)
        held_wall = opts.warmup + held_seconds
        replied_while_held = waiting.finished
        rss_held_end = server.rss_kib()

        answers_at = now() - opened_at
        log(f"the host answers {len(commands)} commands, {answers_at:.1f} s after the first")
        t0 = now()
        for req_id in commands:
            host.send(event_frame(req_id))
        finished = await waiting.until_finished(opened_at + wait + 5.0)
        answered_s, last_reply_s = now() - t0, now() - opened_at
        statuses: dict[str, int] = {}
        examples: list[str] = []
        answered = timed_out = 0
        asked = set(commands)
        for proto in waiting.requests:
            if proto.reply is None:
                key = "closed without a reply" if proto.lost else "no reply"
            else:
                status, raw = proto.reply
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = {}
                kind = body.get("status") if isinstance(body, dict) else None
                key = f"{status} {kind}"
                answer = body.get("answer") if isinstance(body, dict) else None
                if (
                    status == 200
                    and kind == "answered"
                    and body.get("req_id") in asked
                    and isinstance(answer, dict)
                    and answer.get("req_id") == body.get("req_id")
                ):
                    answered += 1
                    continue
                if status == 200 and kind == "sent":
                    timed_out += 1
            statuses[key] = statuses.get(key, 0) + 1
            if len(examples) < 3:
                examples.append(
                    key if proto.reply is None else proto.reply[1][:200].decode(errors="replace")
                )
        await asyncio.sleep(settle)
        rss_after = server.rss_kib()
        waiting.close()
        await close_all([host])
        await close_pairs(conns)

        b, h = latency_summary(base.one_way()), latency_summary(held.one_way())
        return {
            "requests": count,
            "opened": sent,
            "connect_errors": len(waiting.connect_errors),
            "connect_error_examples": sorted(set(waiting.connect_errors))[:3],
            "open_s": round(open_s, 3),
            "all_held_s": round(all_held_s, 3) if held_ok else None,
            "commands_at_host": len(commands),
            "server_cpu_us_per_request": per(open_cpu, sent),
            "held_at_rss": held_at_rss,
            "rss_kib_before": rss_before,
            "rss_kib_held": rss_held,
            "rss_kib_held_after_latency": rss_held_end,
            "rss_kib_after_answers": rss_after,
            "kib_per_held_request": round((rss_held - rss_before) / held_at_rss, 2)
            if held_at_rss > 0
            else None,
            "one_way_before": b,
            "one_way_held": h,
            "rtt_before": latency_summary(base.round_trips()),
            "rtt_held": latency_summary(held.round_trips()),
            "p99_ratio": ratio(h["p99_ms"], b["p99_ms"]),
            "p99_rise_ms": round(h["p99_ms"] - b["p99_ms"], 3)
            if h["p99_ms"] is not None and b["p99_ms"] is not None
            else None,
            "server_cpu_pct_before": round(100 * base_cpu / base_wall, 1),
            "server_cpu_pct_held": round(100 * held_cpu / held_wall, 1) if held_wall else None,
            "latency_seconds_held": round(held_seconds, 2),
            "lost": (base.sent - base.answered) + (held.sent - held.answered),
            "errors": base.errors + held.errors,
            "replied_while_held": replied_while_held,
            "answers_sent_after_s": round(answers_at, 3),
            "all_replied": finished,
            "all_replied_after_answers_s": round(answered_s, 3),
            "last_reply_after_first_request_s": round(last_reply_s, 3),
            "answered": answered,
            "timed_out_sent": timed_out,
            "other_replies": statuses,
            "other_reply_examples": examples,
            "host_other_frames": len(host_other),
            "host_other_examples": sorted({x.decode(errors="replace") for x in host_other})[:3],
        }

    sb, _ = await _with_servers(opts, opts.pairs + 1, measure, users=2, bare=False)
    before, held = sb["one_way_before"]["p99_ms"], sb["one_way_held"]["p99_ms"]
    count = sb["requests"]
    targets = [
        target(
            f"KiB RSS per held wait={wait} request",
            sb["kib_per_held_request"],
            f"< {WAIT_KIB_TARGET:g}",
            None
            if sb["kib_per_held_request"] is None
            else sb["kib_per_held_request"] < WAIT_KIB_TARGET,
        ),
        target(
            f"relay one-way p99 ms with {count} requests held",
            held,
            f"<= max(1.5 x {before}, {before} + 1)" if before is not None else "",
            _no_effect(before, held),
        ),
        target(
            f"answered (of {count})",
            sb["answered"],
            f"== {count}",
            sb["answered"] == count,
        ),
        target(
            "requests answered `sent` (wait ran out)",
            sb["timed_out_sent"],
            "0",
            sb["timed_out_sent"] == 0,
        ),
        target(
            "relay lost + errors", sb["lost"] + sb["errors"], "0", sb["lost"] + sb["errors"] == 0
        ),
    ]
    params = {k: getattr(opts, k) for k in ("requests", "wait", "concurrency", "pairs", "rate")}
    params |= {"warmup": opts.warmup, "seconds": opts.seconds}
    params["rest_limits"] = (
        "SimBridge has no rate limit on REST commands (no SIMBRIDGE_* setting meters GET /sims; "
        "simbridge/services/guard.py limits only logins, registrations and pairing); the "
        "host's answers pass because every scenario lifts SIMBRIDGE_WS_MESSAGES_PER_SECOND "
        "and SIMBRIDGE_WS_MESSAGE_BURST (bench/servers.py LIFTED_LIMITS); nothing else lifted"
    )
    params["no_effect"] = "p99 while held <= max(1.5 x p99 before, p99 before + 1 ms)"
    return {"params": params, "simbridge": sb, "bare": None, "ratio": None, "targets": targets}


RUNNERS = {"replay": scenario_replay, "waits": scenario_waits}
