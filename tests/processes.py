"""Real `python -m simbridge serve` processes for tests that need a whole server lifetime:
started on a free loopback port, stopped by their own PID."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SECRET = "process-tests-secret-that-is-long-enough-for-hs256"
GRACEFUL_SECONDS = 5.0
START_LIMIT = 20.0
POLL_INTERVAL = 0.05
SIMBRIDGE_SERVE = ("-m", "simbridge", "serve", "--port", "{port}")


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DB_PATH": str(tmp_path / "simbridge.db"),
        "JWT_SECRET": SECRET,
        "HOST": "127.0.0.1",
        "SIMBRIDGE_BCRYPT_ROUNDS": "4",
        "SIMBRIDGE_GRACEFUL_SHUTDOWN_SECONDS": str(GRACEFUL_SECONDS),
        **extra,
    }


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m simbridge ARGS` in `tmp_path` with only PATH and `env` set (30 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "simbridge", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


class Servers:
    """Starts `python -m simbridge serve` processes and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[ServerProcess] = []

    async def start(self, argv: Sequence[str] = SIMBRIDGE_SERVE, **extra_env: str) -> ServerProcess:
        """Run `python <argv>` (`{port}` in it becomes a free port) with `extra_env`."""
        port = free_port()
        output = self.tmp_path / f"server-{len(self.started)}.log"
        with output.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *(arg.format(port=port) for arg in argv),
                env=server_env(self.tmp_path, **extra_env),
                cwd=self.tmp_path,
                stdout=sink,
                stderr=sink,
            )
        server = ServerProcess(process, port, output)
        self.started.append(server)
        await self._wait_until_serving(server)
        return server

    async def _wait_until_serving(self, server: ServerProcess) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=1) as http:
            for _ in range(int(START_LIMIT / POLL_INTERVAL)):
                if server.process.returncode is not None:
                    pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
                try:
                    await http.get("/devices")
                except httpx.TransportError:
                    await asyncio.sleep(POLL_INTERVAL)
                else:
                    return
        pytest.fail(f"server not serving after {START_LIMIT}s:\n{server.log()}")

    async def stop(self, server: ServerProcess, sig: int = signal.SIGTERM) -> int:
        """Send `sig`; kill if the process is still there after the graceful timeout."""
        if server.process.returncode is None:
            server.process.send_signal(sig)
        try:
            return await asyncio.wait_for(server.process.wait(), GRACEFUL_SECONDS + 5)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()
            raise

    async def stop_all(self) -> None:
        for server in self.started:
            if server.process.returncode is None:
                try:
                    await self.stop(server)
                except TimeoutError:
                    pass


async def running_servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """The body of the `servers` fixture: whatever a test started is stopped afterwards."""
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        await started.stop_all()
