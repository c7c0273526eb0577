"""Redis for tests: the shared server (one key prefix per test, its keys deleted afterwards),
a private `redis-server` for what would disturb others (stopping it), and a TCP proxy that
can go silent, for a subscription that hears nothing without being closed.

Never FLUSHALL, FLUSHDB or restart the shared server: other tests and people use it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from simbridge.hub.redis import RedisBroker

REDIS_URL = os.environ.get("SIMBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_HOWTO = (
    "start one with `redis-server --daemonize yes` "
    "(or point SIMBRIDGE_TEST_REDIS_URL at another server)"
)
START_LIMIT = 5.0  # seconds for a private redis-server to answer

# Every timing turned down, so that expiry, probes and reconnects take a fraction of a second.
FAST: dict[str, Any] = {
    "heartbeat_seconds": 0.1,
    "node_ttl_seconds": 0.8,
    "probe_seconds": 0.2,
    "probe_timeout_seconds": 0.3,
    "command_timeout_seconds": 0.5,
    "max_reconnect_pause_seconds": 0.1,
}


async def require_redis(url: str = REDIS_URL) -> None:
    """Skip (fail under CI=true) when the shared Redis does not answer."""
    client = Redis.from_url(url, protocol=2, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        reason = f"Redis at {url} is not reachable ({exc!r}); {REDIS_HOWTO}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        await client.aclose()


def unique_prefix() -> str:
    return f"sbtest:{uuid.uuid4().hex[:12]}:"


async def delete_keys(url: str, prefix: str) -> None:
    client = Redis.from_url(url, protocol=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@dataclass
class RedisBackend:
    """Makes brokers that share one Redis and one key prefix: the nodes of one test."""

    url: str = REDIS_URL
    prefix: str = field(default_factory=unique_prefix)
    defaults: dict[str, Any] = field(default_factory=dict)

    def __call__(self, **options: Any) -> RedisBroker:
        url = options.pop("url", self.url)
        settings = FAST | self.defaults | options
        return RedisBroker(url, prefix=self.prefix, **settings)


@asynccontextmanager
async def redis_backend(**defaults: Any) -> AsyncIterator[RedisBackend]:
    """A fresh prefix on the shared Redis, its keys deleted afterwards."""
    await require_redis()
    backend = RedisBackend(defaults=defaults)
    try:
        yield backend
    finally:
        await delete_keys(backend.url, backend.prefix)


async def client_id(url: str, name: str) -> int:
    """The id of the connection named `name` (one of a broker's), for CLIENT KILL ID."""
    client = Redis.from_url(url, protocol=2, decode_responses=True)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    ids = [int(c["id"]) for c in clients if c["name"] == name]
    assert len(ids) == 1, f"{len(ids)} connections named {name}"
    return ids[0]


async def kill_client(url: str, name: str) -> None:
    client = Redis.from_url(url, protocol=2)
    try:
        await client.execute_command("CLIENT", "KILL", "ID", await client_id(url, name))
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A `redis-server` of this test's own, without persistence, stopped and started by PID."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip(f"redis-server is not installed; {REDIS_HOWTO}")
        self._executable = executable
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._process = subprocess.Popen(
            [self._executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url, protocol=2, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_LIMIT
        try:
            while True:  # until it answers or the start limit
                with suppress(Exception):
                    await client.ping()
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"private redis-server on port {self.port} did not start")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        server.stop()


class SilentProxy:
    """A TCP proxy to Redis whose connections can all go silent (`mute`): the client's socket
    stays open and nothing more reaches it, as when a subscription dies without a reset."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._muted: set[asyncio.StreamWriter] = set()
        self._live: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    def mute(self) -> None:
        """Whatever is connected now hears nothing more; new connections work."""
        self._muted |= self._live

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._live:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._live.add(writer)
        for source, sink, client in ((reader, up_writer, None), (up_reader, writer, writer)):
            task = asyncio.create_task(self._pump(source, sink, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        client: asyncio.StreamWriter | None,
    ) -> None:
        try:
            while data := await source.read(65536):  # until the peer closes
                if client is None or client not in self._muted:
                    sink.write(data)
                    await sink.drain()
        except ConnectionError:
            pass  # the other side is gone: so is this one
        finally:
            sink.close()
