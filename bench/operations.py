"""What an operator turns on beside the relay (issue 11): a Prometheus scrape of `/metrics` every
second, and a webhook per account with a real receiver on loopback.

The webhooks ask for `INCOMING_SMS`, which a side host per account sends at a steady trickle
(`--webhook-rate`, 4 a second by default: one a second for each account's phone, more than a
phone receives; each costs the relay a signed POST, about 2 ms of its CPU on this machine):
the relay then pays what every event frame of a host costs with webhooks on (the account's
lookup and the `event` filter, for each of the load's `SIM_INFO` answers), plus real signed
deliveries over HTTP. A webhook on the load's own events would measure httpx against the relay
(one POST per round trip), not the relay with webhooks on.

`throughput --ops` uses it, and `ops-cost` measures its CPU alone; the server needs
`SIMBRIDGE_WEBHOOK_ALLOW_PRIVATE=true` (the receiver is on 127.0.0.1), which both add.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.common import Snapshot, le, target
from bench.loadgen import Ws
from bench.servers import PairInfo, Server, Setup, host_url, open_checked

SCRAPE_SECONDS = 1.0
SERVER_ENV = {"SIMBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true"}


@dataclass
class Receiver:
    """A webhook receiver: answers every POST with 200 and counts the deliveries."""

    deliveries: int = 0
    bad_requests: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:  # the relay keeps its connections alive
                writer.close()
            with contextlib.suppress(TimeoutError):  # a stop is bounded in time
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if head.startswith(b"POST ") and orjson.loads(body).get("delivery_id"):
                    self.deliveries += 1
                else:
                    self.bad_requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()


@dataclass
class Operations:
    """The scrapes, webhooks and side hosts of one run, and what they counted."""

    rate: float = 4.0  # INCOMING_SMS per second, over all side hosts together
    scrapes: int = 0
    scrape_failures: int = 0
    incoming_sent: int = 0
    receiver: Receiver = field(default_factory=Receiver)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    side_hosts: list[Ws] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "metrics_scrapes": self.scrapes,
            "metrics_scrape_failures": self.scrape_failures,
            "webhooks": len(self.side_hosts),
            "incoming_sms_sent": self.incoming_sent,
            "webhook_deliveries_received": self.receiver.deliveries,
            "receiver_bad_requests": self.receiver.bad_requests,
        }

    async def scrape(self, server: Server) -> None:
        conn = server.http_conn()
        while True:
            status, body = await conn.request("GET", "/metrics")
            if status == 200 and b"simbridge_" in body:
                self.scrapes += 1
            else:
                self.scrape_failures += 1
            await asyncio.sleep(SCRAPE_SECONDS)

    async def trickle(self) -> None:
        pause = len(self.side_hosts) / self.rate
        while True:
            for host in self.side_hosts:
                self.incoming_sent += 1
                host.send(incoming_sms(self.incoming_sent))
                await asyncio.sleep(pause / len(self.side_hosts))


def incoming_sms(number: int) -> bytes:
    return orjson.dumps(
        {"type": "event", "event": "INCOMING_SMS", "from": "+15550100", "body": f"sms {number}"}
    )


@contextlib.asynccontextmanager
async def operations_on(
    server: Server, setup: Setup, client: str, rate: float
) -> AsyncIterator[Operations]:
    """A webhook and a side host per account, the trickle of SMS, and the scrapes, for as long
    as the block runs; then the deliveries still in flight get a moment to arrive."""
    ops = Operations(rate=rate)
    port = await ops.receiver.start()
    conn = server.http_conn()
    url = f"http://127.0.0.1:{port}/hook"
    for index, (_, token) in enumerate(setup.accounts):
        await conn.json("POST", "/webhooks", {"url": url, "events": ["INCOMING_SMS"]}, token)
        host = await conn.json("POST", "/devices", {"name": f"side{index}", "type": "host"}, token)
        info = PairInfo(host["id"], 0, token)
        ops.side_hosts.append(await open_checked(host_url(server, info), host["id"], client))
    conn.close()
    ops.tasks = [asyncio.create_task(ops.scrape(server)), asyncio.create_task(ops.trickle())]
    try:
        yield ops
    finally:
        for task in ops.tasks:
            task.cancel()
        await asyncio.gather(*ops.tasks, return_exceptions=True)
        for _ in range(50):  # up to 5 s for the last deliveries
            if ops.receiver.deliveries >= ops.incoming_sent:
                break
            await asyncio.sleep(0.1)
        for host in ops.side_hosts:
            await host.close()
        await ops.receiver.stop()


# --------------------------------------------------------------------------- ops-cost

OPS_CPU_SHARE_TARGET = 3.0  # % of one core: the event loop's, which bounds the relay


async def scenario_ops_cost(opts: argparse.Namespace) -> dict[str, Any]:
    """The CPU the server spends on the `--ops` work alone, with no relay load: the same
    throughput pairs set up, idle, then the scrapes and the webhook trickle. A direct figure
    for what `throughput --ops` compares through a noisy ratio: on a relay bound by its event
    loop, this share of a core is the share of round trips it costs."""
    from bench.run import _with_servers  # the runner's server set-up (it imports this module)

    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        idle_ms = await _server_cpu_ms_per_s(server, opts.seconds)
        async with operations_on(server, setup, opts.client, opts.webhook_rate) as ops:
            await asyncio.sleep(opts.warmup)
            delivered = ops.receiver.deliveries
            busy_ms = await _server_cpu_ms_per_s(server, opts.seconds)
            delivered = ops.receiver.deliveries - delivered
        added = busy_ms - idle_ms
        return {
            "idle_cpu_ms_per_s": round(idle_ms, 2),
            "ops_cpu_ms_per_s": round(busy_ms, 2),
            "added_cpu_pct_of_a_core": round(100 * added / 1000, 2),  # ms a second -> %
            "deliveries_per_s": round(delivered / opts.seconds, 2),
            "operations": ops.summary(),
        }

    opts.server_env = {**opts.server_env, **SERVER_ENV}
    sb, _ = await _with_servers(opts, opts.pairs, measure, bare=False)
    added = sb.get("added_cpu_pct_of_a_core")
    return {
        "params": {k: getattr(opts, k) for k in ("pairs", "webhook_rate", "warmup", "seconds")},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": [
            target(
                "server CPU added by scrapes and webhooks (% of a core)",
                added,
                f"<= {OPS_CPU_SHARE_TARGET}",
                le(added, OPS_CPU_SHARE_TARGET),
            )
        ],
    }


async def _server_cpu_ms_per_s(server: Server, seconds: float) -> float:
    start = Snapshot.take(server)
    await asyncio.sleep(seconds)
    wall, server_cpu, _ = Snapshot.take(server).since(start)
    return 1000 * server_cpu / wall


RUNNERS = {"ops-cost": scenario_ops_cost}
