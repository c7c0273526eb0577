"""TLS without a proxy: real `simbridge serve` processes with SIMBRIDGE_TLS_CERT/_KEY, real
https:// (httpx) and wss:// (websockets) clients trusting a CA made here with trustme, and the
certificate replaced on disk (SIGHUP, or the poll) while the server runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
from websockets.asyncio.client import connect

from tests.helpers import Device, assert_relays, make_account, make_pair, receive
from tests.processes import (
    SIMBRIDGE_SERVE,
    START_LIMIT,
    ServerProcess,
    Servers,
    free_port,
    run_cli,
    server_env,
)
from tests.redis_server import REDIS_URL, delete_keys, require_redis, unique_prefix

WAIT = 10.0  # the longest any reload may take to show


class TlsServers(Servers):
    """Servers that are waited for over https, trusting `self.client_context`."""

    client_context: ssl.SSLContext

    async def _wait_until_serving(self, server: ServerProcess) -> None:
        url = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=url, verify=self.client_context, timeout=1) as http:
            deadline = time.monotonic() + START_LIMIT
            while time.monotonic() < deadline:
                if server.process.returncode is not None:
                    pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
                try:
                    await http.get("/health")
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                else:
                    return
        pytest.fail(f"server not serving over https after {START_LIMIT}s:\n{server.log()}")


class Files:
    def __init__(self, tmp_path: Path) -> None:
        self.cert = tmp_path / "fullchain.pem"
        self.key = tmp_path / "privkey.pem"

    def write(self, cert: bytes, key: bytes) -> None:
        """Replace both files the way certbot's renewal does: whole new files."""
        for path, data in ((self.cert, cert), (self.key, key)):
            fresh = path.with_suffix(".new")
            fresh.write_bytes(data)
            fresh.chmod(0o600)
            os.replace(fresh, path)

    def put(self, issued: trustme.LeafCert) -> None:
        self.write(chain(issued), issued.private_key_pem.bytes())

    @property
    def env(self) -> dict[str, str]:
        return {"SIMBRIDGE_TLS_CERT": str(self.cert), "SIMBRIDGE_TLS_KEY": str(self.key)}


def chain(issued: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in issued.cert_chain_pems)


def leaf_der(issued: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


def trusting(*cas: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        ca.configure_trust(context)
    return context


def served_cert(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate a new TLS connection to `port` is given (DER)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


async def eventually_served(port: int, context: ssl.SSLContext, expected: bytes) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await asyncio.to_thread(served_cert, port, context) == expected:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> Files:
    made = Files(tmp_path)
    made.put(ca.issue_cert("127.0.0.1", "localhost"))
    return made


@pytest.fixture
async def tls_servers(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[TlsServers]:
    started = TlsServers(tmp_path)
    started.client_context = trusting(ca)
    try:
        yield started
    finally:
        await started.stop_all()


async def start(tls_servers: TlsServers, files: Files) -> ServerProcess:
    return await tls_servers.start(SIMBRIDGE_SERVE, **files.env, SIMBRIDGE_TLS_POLL_SECONDS="0.2")


async def test_https_and_wss_relay(tls_servers: TlsServers, files: Files) -> None:
    server = await start(tls_servers, files)
    verify = tls_servers.client_context
    base = f"https://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, verify=verify, timeout=5) as http:
        health = await http.get("/health")
        assert health.status_code == 200, health.text
        owner = await make_account(http, "tls-owner")
        pair = await make_pair(http, owner)
    urls = [
        f"wss://127.0.0.1:{server.port}/ws/{d.type}/{d.id}?token={owner.token}"
        for d in (pair.host, pair.client)
    ]
    async with (
        connect(urls[0], ssl=verify, open_timeout=5, close_timeout=2) as host_ws,
        connect(urls[1], ssl=verify, open_timeout=5, close_timeout=2) as client_ws,
    ):
        assert await receive(host_ws) == {"type": "connected", "device_id": pair.host.id}
        assert await receive(client_ws) == {"type": "connected", "device_id": pair.client.id}
        await assert_relays(host_ws, client_ws, "over-wss")


async def test_plain_http_to_the_tls_port_fails(tls_servers: TlsServers, files: Files) -> None:
    server = await start(tls_servers, files)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"http://127.0.0.1:{server.port}/health")
    assert server.process.returncode is None


def wss(server: ServerProcess, device: Device, context: ssl.SSLContext) -> connect:
    url = f"wss://127.0.0.1:{server.port}/ws/{device.type}/{device.id}?token={device.owner.token}"
    return connect(url, ssl=context, open_timeout=5, close_timeout=2)


@pytest.mark.parametrize("how", ["SIGHUP", "poll"])
async def test_renewed_certificate_is_served_without_restart(
    tls_servers: TlsServers, files: Files, ca: trustme.CA, how: str
) -> None:
    """New connections get the new certificate; sockets opened before carry on relaying."""
    server = await start(tls_servers, files)
    before = await asyncio.to_thread(served_cert, server.port, trusting(ca))
    base = f"https://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, verify=trusting(ca), timeout=5) as http:
        pair = await make_pair(http, await make_account(http, "renewal-owner"))
    async with (
        wss(server, pair.host, trusting(ca)) as host_ws,
        wss(server, pair.client, trusting(ca)) as client_ws,
    ):
        assert (await receive(host_ws))["type"] == "connected"
        assert (await receive(client_ws))["type"] == "connected"
        other_ca = trustme.CA()
        renewed = other_ca.issue_cert("127.0.0.1", "renewed.example")
        files.put(renewed)
        if how == "SIGHUP":
            server.process.send_signal(signal.SIGHUP)
        both = trusting(ca, other_ca)
        assert await eventually_served(server.port, both, leaf_der(renewed)), server.log()
        assert before != leaf_der(renewed)
        assert (
            f"TLS certificate reloaded ({'SIGHUP' if how == 'SIGHUP' else 'the files changed'})"
            in server.log()
        )
        await assert_relays(host_ws, client_ws, "across-the-renewal")
        # New connections are verified against the new CA only.
        async with httpx.AsyncClient(base_url=base, verify=trusting(other_ca), timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
        await host_ws.close()
        async with wss(server, pair.host, trusting(other_ca)) as again:
            assert await receive(again) == {"type": "connected", "device_id": pair.host.id}
            await assert_relays(again, client_ws, "after-the-renewal")
    assert server.process.returncode is None


async def test_broken_replacement_is_refused_and_the_old_one_kept(
    tls_servers: TlsServers, files: Files, ca: trustme.CA
) -> None:
    server = await start(tls_servers, files)
    context = trusting(ca)
    original = await asyncio.to_thread(served_cert, server.port, context)
    old_key = files.key.read_bytes()
    files.write(b"not a certificate\n", old_key)  # garbage, on SIGHUP
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while "refused" not in server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert f"SIMBRIDGE_TLS_CERT {files.cert} holds no PEM certificate" in server.log()
    assert await asyncio.to_thread(served_cert, server.port, context) == original
    # A valid certificate with a key that is not its own, found by the poll.
    files.write(chain(trustme.CA().issue_cert("127.0.0.1")), old_key)
    deadline = time.monotonic() + WAIT
    while server.log().count("refused") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert server.log().count("refused") == 2, server.log()
    assert await asyncio.to_thread(served_cert, server.port, context) == original
    assert server.process.returncode is None
    async with httpx.AsyncClient(verify=context, timeout=5) as http:
        assert (await http.get(f"https://127.0.0.1:{server.port}/health")).status_code == 200


def start_up(tmp_path: Path, files: Files) -> tuple[int, str]:
    env = {k: v for k, v in server_env(tmp_path, **files.env).items() if k != "PATH"}
    done = run_cli(tmp_path, "serve", "--port", str(free_port()), **env)
    return done.returncode, done.stderr


def test_missing_file_stops_start_up(tmp_path: Path, files: Files) -> None:
    files.key.unlink()
    code, stderr = start_up(tmp_path, files)
    assert code == 2, stderr
    assert "SIMBRIDGE_TLS_KEY" in stderr and str(files.key) in stderr, stderr
    assert "Traceback" not in stderr


def test_invalid_pem_stops_start_up(tmp_path: Path, files: Files) -> None:
    files.cert.write_text("this is not PEM\n")
    code, stderr = start_up(tmp_path, files)
    assert code == 2, stderr
    assert f"SIMBRIDGE_TLS_CERT {files.cert} holds no PEM certificate" in stderr, stderr
    assert "Traceback" not in stderr


def test_certificate_and_key_that_do_not_match_stop_start_up(tmp_path: Path, files: Files) -> None:
    files.write(chain(trustme.CA().issue_cert("127.0.0.1")), files.key.read_bytes())
    code, stderr = start_up(tmp_path, files)
    assert code == 2, stderr
    assert "not a valid PEM certificate and matching private key" in stderr, stderr
    assert str(files.cert) in stderr and "Traceback" not in stderr


@pytest.mark.postgres
async def test_every_worker_serves_tls_and_reloads_on_sighup(
    tls_servers: TlsServers, files: Files, ca: trustme.CA, postgres_url: str
) -> None:
    """`serve --workers 2`: each worker builds its own context from the files; SIGHUP to the
    main process reaches both workers, so every new connection, whichever worker takes it,
    gets the renewed certificate."""
    await require_redis()
    prefix = unique_prefix()
    try:
        server = await tls_servers.start(
            (*SIMBRIDGE_SERVE, "--workers", "2"),
            **files.env,
            DATABASE_URL=postgres_url,
            SIMBRIDGE_BROKER="redis",
            REDIS_URL=REDIS_URL,
            SIMBRIDGE_REDIS_PREFIX=prefix,
            SIMBRIDGE_TLS_POLL_SECONDS="3600",  # only SIGHUP can reload within this test
        )
        deadline = time.monotonic() + START_LIMIT
        while server.log().count("Worker ready") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert server.log().count("Worker ready") == 2, server.log()
        other_ca = trustme.CA()
        renewed = other_ca.issue_cert("127.0.0.1")
        files.put(renewed)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while server.log().count("TLS certificate reloaded (SIGHUP)") < 2:
            assert time.monotonic() < deadline, server.log()
            await asyncio.sleep(0.1)
        both = trusting(ca, other_ca)
        for _ in range(16):  # new connections, spread over the workers by the kernel
            assert await asyncio.to_thread(served_cert, server.port, both) == leaf_der(renewed)
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=trusting(other_ca), timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
        assert server.process.returncode is None
    finally:
        await delete_keys(REDIS_URL, prefix)
