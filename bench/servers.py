"""The servers under test: start one on 127.0.0.1 and a free port, watch its CPU and memory
through /proc, set it up through its REST API, and stop it by its PID.

SimBridge runs as `python -m simbridge serve` on a fresh SQLite file in a temporary folder
(its working directory, so no `.env` of the checkout is read); the bare relay runs as
`python -m bench.bare_relay`. Both get the file-descriptor limit raised to the hard limit.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import HttpConn, PairConn, Ws, for_each, open_ws

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "bench-password-1"
# Abuse limits are policy, not speed: the bench drives far more than one phone's share from
# one address and account, so it lifts the limits that would otherwise be what it measures
# (`--server-env NAME=VALUE` puts any of them back). Names the server does not know are ignored.
LIFTED_LIMITS = {
    "SIMBRIDGE_WS_MESSAGES_PER_SECOND": "1000000",
    "SIMBRIDGE_WS_MESSAGE_BURST": "1000000",
    "SIMBRIDGE_MAX_SOCKETS_PER_USER": "1000000",
    "SIMBRIDGE_MAX_DEVICES_PER_USER": "1000000",
    "SIMBRIDGE_REGISTRATIONS_PER_ADDRESS": "1000000",
}
# settings the runner decides; everything else is the server's default
_OWN_ENV = ("JWT_SECRET", "DB_PATH", "DATABASE_URL", "HOST", "PORT")


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)  # noqa: T201


@dataclass
class Server:
    kind: str  # "simbridge" or "bare"
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    db_path: Path | None = None
    stop_info: dict[str, Any] = field(default_factory=dict)
    tree: bool = False  # a manager process with workers: CPU and memory of all of them

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's process and, for a `tree`, every process below it."""
        return [self.pid, *descendants(self.pid)] if self.tree else [self.pid]

    @property
    def http(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def http_conn(self) -> HttpConn:
        return HttpConn("127.0.0.1", self.port)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (of each, for a `tree`), from /proc/<pid>/stat."""
        if not self.tree:
            return process_cpu_seconds(self.pid)
        return sum(process_cpu_seconds(pid, missing=0.0) for pid in self.pids())

    def rss_kib(self) -> int:
        if not self.tree:
            return process_rss_kib(self.pid)
        return sum(process_rss_kib(pid, missing=0) for pid in self.pids())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after `timeout`; returns exit code and how long it took."""
        if self.stop_info:
            return self.stop_info
        started = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
                killed = True
        self.stop_info = {
            "exit_code": self.proc.returncode,
            "stop_seconds": round(time.monotonic() - started, 3),
            "killed": killed,
        }
        return self.stop_info


def process_cpu_seconds(pid: int, missing: float | None = None) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (`missing` if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if missing is None:
            raise
        return missing
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_rss_kib(pid: int, missing: int | None = None) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        if missing is None:
            raise
        return missing
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    if missing is None:
        raise RuntimeError("no VmRSS")
    return missing


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of each of its threads, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:  # bounded
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(x) for x in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def sockets_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to local `port` each of `pids` holds (from
    /proc/net/tcp and each process's fds): where the kernel put the sockets of a server with
    several workers."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    counts: dict[int, int] = {}
    for pid in pids:
        found = 0
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found += 1
        counts[pid] = found
    return counts


@dataclass
class Group:
    """Several servers measured as one: CPU and memory summed."""

    servers: list[Server]

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)

    def rss_kib(self) -> int:
        return sum(server.rss_kib() for server in self.servers)


def _child_setup() -> None:
    raise_fd_limit()


def _spawn(kind: str, args: list[str], env: dict[str, str], workdir: Path, port: int) -> Server:
    log_path = workdir / f"{kind}-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup,  # noqa: PLW1509 - only setrlimit, before exec
        )
    return Server(kind, proc, port, workdir, log_path)


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    """Poll until the port accepts a connection (bounded); fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with {server.proc.returncode} before listening:\n"
                + server.log_tail()
            )
        try:
            with socket.create_connection(server.http, timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.kind} did not listen within {timeout} s:\n" + server.log_tail())


def simbridge_env(
    db_path: Path, jwt_secret: str, bcrypt_rounds: int, extra: dict[str, str]
) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SIMBRIDGE_") and k not in _OWN_ENV
    }
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "DB_PATH": str(db_path),
            "JWT_SECRET": jwt_secret,
            "SIMBRIDGE_BCRYPT_ROUNDS": str(bcrypt_rounds),
            **LIFTED_LIMITS,
        }
    )
    env.update(extra)
    return env


def migrate(workdir: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "simbridge", "migrate"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"simbridge migrate failed:\n{done.stdout!r}\n{done.stderr!r}")


class Workdir:
    """A temporary folder for one scenario's databases and logs; removed unless kept."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="simbridge-bench-"))
        self.keep = keep
        self.servers: list[Server] = []
        self.jwt_secret = secrets.token_urlsafe(48)  # one per folder: tokens survive restarts

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()
        if self.keep:
            log(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    def start_simbridge(
        self,
        bcrypt_rounds: int = 4,
        extra_env: dict[str, str] | None = None,
        db_name: str = "simbridge.db",
        migrate_first: bool = False,
        port: int | None = None,
        workers: int = 1,
    ) -> Server:
        """With `workers` > 1, `simbridge serve --workers N`: a manager process and N workers
        on one port (measured together: `Server.tree`)."""
        db_path = self.path / db_name
        env = simbridge_env(db_path, self.jwt_secret, bcrypt_rounds, extra_env or {})
        if migrate_first:
            migrate(self.path, env)
        port = port or free_port()
        args = ["-m", "simbridge", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        server = _spawn("simbridge", args, env, self.path, port)
        server.db_path = db_path
        server.tree = workers > 1
        self.servers.append(server)
        wait_ready(server)
        return server

    def start_bare(self, backlog: int = 2048) -> Server:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        args = ["-m", "bench.bare_relay", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--backlog", str(backlog)]
        server = _spawn("bare", args, env, self.path, port)
        self.servers.append(server)
        wait_ready(server)
        return server


# --------------------------------------------------------------------------- set-up


@dataclass
class PairInfo:
    host_id: int
    client_id: int
    token: str  # the owner's token ("" on the bare relay)


@dataclass
class Setup:
    """What the REST API created: accounts (username, token) and pairs."""

    accounts: list[tuple[str, str]]
    pairs: list[PairInfo]
    seconds: float


async def setup_simbridge(
    server: Server,
    pairs: int,
    users: int = 4,
    concurrency: int = 16,
    user_prefix: str = "bench",
    paired: bool = True,
) -> Setup:
    """Register `users` accounts and `pairs` host/client pairs spread over them, through REST
    (with `paired=False`, the hosts and clients are registered but not paired)."""
    started = time.monotonic()
    users = max(1, min(users, pairs)) if pairs else max(1, users)

    async def account(conn: HttpConn, index: int) -> tuple[str, str]:
        name = f"{user_prefix}{index}"
        await conn.json("POST", "/auth/register", {"username": name, "password": PASSWORD})
        login = await conn.json("POST", "/auth/login", {"username": name, "password": PASSWORD})
        return name, login["token"]

    accounts = await for_each(users, min(users, 4), server.http_conn, account)

    async def pair(conn: HttpConn, index: int) -> PairInfo:
        token = accounts[index % users][1]
        host = await conn.json("POST", "/devices", {"name": f"h{index}", "type": "host"}, token)
        client = await conn.json("POST", "/devices", {"name": f"c{index}", "type": "client"}, token)
        if not paired:
            return PairInfo(host["id"], client["id"], token)
        code = await conn.json("POST", f"/pair?host_device_id={host['id']}", None, token)
        await conn.json(
            "POST", "/pair/confirm", {"code": code["code"], "client_device_id": client["id"]}, token
        )
        return PairInfo(host["id"], client["id"], token)

    made = await for_each(pairs, concurrency, server.http_conn, pair)
    return Setup(accounts, made, time.monotonic() - started)


def setup_bare(pairs: int) -> Setup:
    """The bare relay has no accounts: ids are made up, the pairing travels in the URL."""
    return Setup([], [PairInfo(2 * i + 1, 2 * i + 2, "") for i in range(pairs)], 0.0)


def host_url(server: Server, pair: PairInfo) -> str:
    base = f"ws://127.0.0.1:{server.port}/ws/host/{pair.host_id}"
    return base if server.kind == "bare" else f"{base}?token={pair.token}"


def client_url(server: Server, pair: PairInfo) -> str:
    base = f"ws://127.0.0.1:{server.port}/ws/client/{pair.client_id}"
    return f"{base}?host={pair.host_id}" if server.kind == "bare" else f"{base}?token={pair.token}"


async def open_checked(url: str, device_id: int, client: str, timeout: float = 10.0) -> Ws:
    ws = await open_ws(url, client, timeout)
    greeting = {k: v for k, v in ws.greeting.items() if k != "seq"}  # a `since` socket's has it
    if greeting != {"type": "connected", "device_id": device_id}:
        await ws.close()
        raise RuntimeError(f"unexpected greeting {ws.greeting!r}")
    return ws


async def connect_pairs(
    server: Server, pairs: list[PairInfo], client: str, concurrency: int = 32, since: bool = False
) -> list[PairConn]:
    """Open every host, then every client (each greeted and checked); clients on `since=0`
    sockets when `since`."""

    class _NoConn:
        def close(self) -> None:
            pass

    async def one(_: Any, index: int) -> PairConn:
        info = pairs[index]
        host = await open_checked(host_url(server, info), info.host_id, client)
        url = client_url(server, info) + ("&since=0" if since else "")
        guest = await open_checked(url, info.client_id, client)
        return PairConn(host, guest)

    return await for_each(len(pairs), concurrency, _NoConn, one)


async def close_all(sockets: list[Ws], concurrency: int = 200) -> None:
    async def one(index: int) -> None:
        try:
            await sockets[index].close()
        except Exception:  # noqa: BLE001 - already gone is fine at the end
            pass

    for start in range(0, len(sockets), concurrency):
        end = min(len(sockets), start + concurrency)
        await asyncio.gather(*(one(i) for i in range(start, end)))
