"""Several SimBridge processes behaving as one server: one Redis (a private `redis-server` by
default, or a given one under a key prefix of this run's own), one database (a SQLite file
shared by the processes, or a fresh PostgreSQL database), one JWT secret.

Everything started here is stopped by its PID; what this run put in a shared Redis is deleted
by SCAN + DEL on its own prefix (never FLUSHALL or FLUSHDB: others use that server); a
PostgreSQL database made here is dropped.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from bench.servers import Server, Workdir, free_port, log, process_cpu_seconds

SHARED_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SIMBRIDGE_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1/test")
REDIS_START_SECONDS = 10.0


# --------------------------------------------------------------------------- Redis


class PrivateRedis:
    """A `redis-server` of this run on 127.0.0.1 and a free port, no persistence; started and
    stopped (and started again, on the same port) by its own PID."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("private redis-server already running")
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        args += ["--loglevel", "warning"]
        with open(self.workdir / f"redis-{self.port}.log", "ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, timeout: float = REDIS_START_SECONDS) -> float:
        """Poll PING until it answers (bounded); returns the seconds it took."""
        t0 = time.monotonic()
        client = Redis(host="127.0.0.1", port=self.port, protocol=2, socket_timeout=0.5)
        try:
            while time.monotonic() - t0 < timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if await client.ping():
                        return time.monotonic() - t0
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.01)
            raise RuntimeError(f"private redis-server did not answer within {timeout} s")
        finally:
            await client.aclose()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (no persistence: it exits at once), SIGKILL after `timeout`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def cpu_seconds(self) -> float:
        pid = self.pid
        return 0.0 if pid is None else process_cpu_seconds(pid, missing=0.0)


@dataclass
class RedisTarget:
    """The Redis of one run: its URL, this run's key prefix, and how to read its counters."""

    url: str
    prefix: str
    private: PrivateRedis | None = None
    server_pid: int | None = None  # the redis-server process, for the CPU accounting
    client: Redis | None = None

    @classmethod
    async def open(cls, where: str, workdir: Path) -> RedisTarget:
        """`where` is "private" (a redis-server of this run) or a redis:// URL."""
        prefix = f"sbbench:{secrets.token_hex(6)}:"
        private = None
        if where == "private":
            private = PrivateRedis(workdir)
            private.start()
            await private.wait_ready()
            url = private.url
        else:
            url = where
        target = cls(url, prefix, private)
        target.client = Redis.from_url(
            url, protocol=2, decode_responses=True, socket_timeout=5, client_name="sbbench"
        )
        info = await target.client.info("server")
        target.server_pid = int(info["process_id"])
        log(
            f"redis {'private ' if private else ''}{url} (pid {target.server_pid}), prefix {prefix}"
        )
        return target

    def env(self) -> dict[str, str]:
        return {
            "SIMBRIDGE_BROKER": "redis",
            "REDIS_URL": self.url,
            "SIMBRIDGE_REDIS_PREFIX": self.prefix,
        }

    def cpu_seconds(self) -> float:
        """The redis-server's CPU from /proc (0 if it cannot be read), for telling the CPU
        of this run's processes from other processes'."""
        if self.server_pid is None:
            return 0.0
        return process_cpu_seconds(self.server_pid, missing=0.0)

    def cpu_processes(self) -> list[Any]:
        return [self] if self.server_pid is not None else []

    async def stats(self) -> RedisStats:
        assert self.client is not None
        return RedisStats(await self.client.info("all"))

    async def count_keys(self, keys: list[str]) -> int:
        """How many of `keys` exist (EXISTS with many keys, in slices)."""
        assert self.client is not None
        found = 0
        for start in range(0, len(keys), 1000):
            found += int(await self.client.exists(*keys[start : start + 1000]))
        return found

    async def delete_own_keys(self) -> int:
        """SCAN + DEL of this run's prefix only (bounded: 10,000 SCAN calls)."""
        client = Redis.from_url(self.url, protocol=2, socket_timeout=5)
        deleted = 0
        try:
            cursor: int = 0
            for _ in range(10_000):
                cursor, keys = await client.scan(cursor, match=f"{self.prefix}*", count=1000)
                if keys:
                    deleted += int(await client.delete(*keys))
                if cursor == 0:
                    break
        finally:
            await client.aclose()
        return deleted

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        private = self.private
        running = private is None or (private.proc is not None and private.proc.poll() is None)
        try:
            if running:
                deleted = await self.delete_own_keys()
                log(f"deleted {deleted} keys under {self.prefix}")
        except Exception as exc:  # noqa: BLE001 - reported, the rest is still stopped
            log(f"could not delete the keys under {self.prefix}: {exc}")
        if self.private is not None:
            self.private.stop()


class RedisStats:
    """One `INFO all` of the Redis: commands per name, read and write events, CPU, memory."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in info.items()
            if name.startswith("cmdstat_") and isinstance(value, dict)
        }
        self.reads = int(info.get("total_reads_processed", 0))
        self.writes = int(info.get("total_writes_processed", 0))
        self.connections = int(info.get("total_connections_received", 0))
        self.cpu = float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))
        self.used_memory = int(info.get("used_memory", 0))

    def since(self, start: RedisStats, frames: int, label: str = "frame") -> dict[str, Any]:
        """What happened in Redis between `start` and this snapshot, per `frames`.

        `INFO commandstats` counts the commands a script calls as well as the EVALSHA itself:
        `calls` mixes both, EVALSHA alone is unambiguous (only clients call it). Read events
        are the reads Redis made from its clients' sockets: about one per write a client made
        (a batch of several commands in one write is read at once; one over 16 KiB takes more).
        The one INFO of this snapshot is not counted.
        """
        calls = {
            name: n - start.calls.get(name, 0)
            for name, n in self.calls.items()
            if n - start.calls.get(name, 0) and name != "info"
        }
        evalsha = calls.get("evalsha", 0) + calls.get("eval", 0)
        reads = self.reads - start.reads - 1  # this snapshot's INFO
        cpu = self.cpu - start.cpu

        def each(value: float, scale: float = 1.0) -> float | None:
            return round(value / frames * scale, 3) if frames else None

        return {
            "frames": frames,
            "calls_with_script_internal": dict(sorted(calls.items())),
            "evalsha": evalsha,
            f"evalsha_per_{label}": each(evalsha),
            f"read_events_per_{label}": each(reads),
            "read_events": reads,
            "write_events": self.writes - start.writes,
            "new_connections": self.connections - start.connections,
            "cpu_seconds": round(cpu, 4),
            f"redis_cpu_us_per_{label}": each(cpu, 1e6),
            "used_memory_kib_delta": round((self.used_memory - start.used_memory) / 1024, 1),
        }


# MONITOR lines: `1796087130.964315 [0 127.0.0.1:56002] "evalsha" "<sha>" ...`, and
# `[0 lua]` for the commands a script calls
_MONITOR_LINE = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')
# not on a frame's path: heartbeats, probes, control messages, script loading, PING
BACKGROUND = frozenset({"set", "publish", "ping", "script", "del", "client", "info"})


def script_names() -> dict[str, str]:
    """SHA1 -> name of the broker's scripts (read from the checkout, as the servers do)."""
    try:
        from simbridge.hub.redis_scripts import SHA
    except Exception:  # noqa: BLE001 - names are a convenience; SHAs are counted anyway
        return {}
    return {sha: name for name, sha in SHA.items()}


def redis_client_ports(owners: dict[int, str], redis_port: int) -> dict[int, str]:
    """Local port -> owner name of every TCP connection that the processes `owners` (pid ->
    name) hold to `redis_port` (from /proc/net/tcp and each process's fds)."""
    inode_port: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and int(cols[2].rsplit(":", 1)[1], 16) == redis_port:
                inode_port[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    ports: dict[int, str] = {}
    for pid, name in owners.items():
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            port = inode_port.get(target[8:-1]) if target.startswith("socket:[") else None
            if port is not None:
                ports[port] = name
    return ports


class Monitor:
    """`redis-cli MONITOR` into a file for an accounting window (started and stopped by its
    PID), then counted: the commands each server process sent, by name (EVALSHA by script),
    told apart from what scripts call (`[0 lua]`) and from other clients of the server.

    MONITOR costs Redis and the machine CPU, so it runs in a window of its own, after the
    measured one: its counts per frame are exact, its speed is not reported."""

    def __init__(self, redis: RedisTarget, workdir: Path) -> None:
        self.redis = redis
        self.path = workdir / f"monitor-{secrets.token_hex(3)}.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> bool:
        """False if redis-cli is missing or MONITOR did not answer within 5 s."""
        if shutil.which("redis-cli") is None:
            return False
        with open(self.path, "wb") as out:
            self.proc = subprocess.Popen(
                ["redis-cli", "-u", self.redis.url, "monitor"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        for _ in range(500):  # bounded: 5 s
            with open(self.path, "rb") as out:
                if out.read(16).startswith(b"OK"):
                    return True
            if self.proc.poll() is not None:
                return False
            await asyncio.sleep(0.01)
        self.stop()
        return False

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def count(
        self, owners: dict[int, str], ports: dict[int, str], frames: int, label: str
    ) -> dict[str, Any]:
        """Per owner (A, B, ...): commands by name; per frame: what every owner sent, summed.
        `ports` maps client ports to owners (taken while the connections were open)."""
        names = script_names()
        by_owner: dict[str, dict[str, int]] = {name: {} for name in owners.values()}
        internal = others = 0
        with open(self.path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                match = _MONITOR_LINE.match(line)
                if match is None:
                    continue
                addr, command, first = match.groups()
                if addr == "lua":
                    internal += 1
                    continue
                try:
                    owner = ports.get(int(addr.rsplit(":", 1)[1]))
                except ValueError:
                    owner = None
                if owner is None:
                    others += 1  # this bench's INFO, redis-cli, or another user of the server
                    continue
                command = command.lower()
                if command == "evalsha":
                    command = f"evalsha {names.get(first or '', (first or '')[:8])}"
                counts = by_owner[owner]
                counts[command] = counts.get(command, 0) + 1
        total: dict[str, int] = {}
        for counts in by_owner.values():
            for command, n in counts.items():
                total[command] = total.get(command, 0) + n
        on_path = sum(n for c, n in total.items() if c.split()[0] not in BACKGROUND)
        evalsha = sum(n for c, n in total.items() if c.startswith("evalsha"))

        def each(value: float) -> float | None:
            return round(value / frames, 3) if frames else None

        try:
            self.path.unlink()
        except OSError:
            pass
        return {
            "frames": frames,
            f"commands_per_{label}": each(on_path),
            f"evalsha_per_{label}": each(evalsha),
            "per_frame": {c: each(n) for c, n in sorted(total.items())},
            "by_process": {o: dict(sorted(c.items())) for o, c in by_owner.items()},
            "script_internal_calls": internal,
            "other_clients_commands": others,
        }


@asynccontextmanager
async def accounting(
    redis: RedisTarget,
    workdir: Path,
    owners: dict[int, str],
    result: dict[str, Any],
    count: Callable[[], int],
    label: str,
) -> AsyncIterator[None]:
    """A MONITOR window around the body, which runs the load; `count()` (frames so far) is
    read once MONITOR is on and again once it is off. The counts land in `result["monitor"]`
    (None if MONITOR could not run)."""
    monitor = Monitor(redis, workdir)
    started = await monitor.start()
    first = count()
    ports: dict[int, str] = {}
    try:
        yield
        ports = redis_client_ports(owners, urlsplit(redis.url).port or 6379)
    finally:
        monitor.stop()
    frames = count() - first
    result["monitor"] = monitor.count(owners, ports, frames, label) if started else None


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    """The database the processes share: one SQLite file (WAL) in the run's folder, or a fresh
    PostgreSQL database `sb_bench_<random>` dropped afterwards."""

    kind: str  # "sqlite" or "postgres"
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def open(cls, kind: str) -> Database:
        if kind == "sqlite":
            return cls(kind)  # DB_PATH: the Workdir's file, the same for every process
        import asyncpg

        name = f"sb_bench_{secrets.token_hex(6)}"
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        parts = urlsplit(POSTGRES_URL)
        url = urlunsplit(parts._replace(path=f"/{name}"))
        log(f"postgres database {name}")
        return cls(kind, name, {"DATABASE_URL": url})

    async def close(self) -> None:
        if self.kind != "postgres" or not self.name:
            return
        import asyncpg

        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """Processes started on one Redis and one database; `servers[0]` is process A."""

    work: Workdir
    redis: RedisTarget
    db: Database
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)

    def start(self, workers: int = 1, bcrypt_rounds: int = 4) -> Server:
        """One more `simbridge serve` (or `serve --workers N`) on the shared Redis and DB."""
        server = self.work.start_simbridge(bcrypt_rounds, self.env, workers=workers)
        self.servers.append(server)
        what = f"{workers} workers" if workers > 1 else "one process"
        log(f"simbridge ({what}, redis broker) pid {server.pid} port {server.port}")
        return server

    def also(self) -> list[Any]:
        """Processes of the run that are not servers (for the CPU accounting)."""
        return self.redis.cpu_processes()


@asynccontextmanager
async def cluster(
    opts: Any, count: int = 2, workers: int = 1, redis: str | None = None
) -> AsyncIterator[Cluster]:
    """`count` SimBridge processes (A, B, ...) with SIMBRIDGE_BROKER=redis, started one after
    the other (the first applies the migrations); everything is stopped and cleaned up after."""
    with Workdir(opts.keep) as work:
        target = await RedisTarget.open(redis or opts.redis, work.path)
        db: Database | None = None
        try:
            db = await Database.open(opts.db)
            env = {**target.env(), **db.env, **opts.server_env}
            group = Cluster(work, target, db, env)
            for _ in range(count):
                group.start(workers)
            yield group
        finally:
            for server in work.servers:
                server.stop()
            await target.close()
            if db is not None:
                await db.close()


@asynccontextmanager
async def one_process(opts: Any) -> AsyncIterator[Server]:
    """The reference: one `simbridge serve`, memory broker, on the same kind of database."""
    with Workdir(opts.keep) as work:
        db = await Database.open(opts.db)
        try:
            server = work.start_simbridge(4, {**db.env, **opts.server_env})
            log(f"simbridge (one process, memory broker) pid {server.pid} port {server.port}")
            yield server
        finally:
            for server in work.servers:
                server.stop()
            await db.close()
