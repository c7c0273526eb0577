"""What a browser may do, what every reply tells it, and what the logs must never hold.

- A WebSocket handshake that carries an `Origin` must name an allowed one (a page on any site
  can make a browser open a socket with the user's cookies or a stolen token); phone apps send
  no `Origin` and are let in.
- Cross-origin REST is closed unless `cors_origins` names the origin.
- Every REST reply, success or error, carries headers that forbid sniffing, framing, caching
  and running it as a page.
- No log line, at any level, of any logger, holds a credential: the JWT (or its signature),
  a password, a device token or a pairing code; neither in-process nor in a real server's
  output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from simbridge.config import Settings
from tests.helpers import (
    RECV_TIMEOUT,
    Account,
    Device,
    LiveServer,
    Server,
    assert_error,
    dial,
    handshake,
    is_online,
    make_account,
    make_device_with_token,
    receive,
    send,
    serving,
)
from tests.processes import Servers

EVIL = "https://evil.example"
APP = "https://app.example"


# --- Origin ---------------------------------------------------------------------------------------
async def test_open_socket_from_foreign_origin_returns_403(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    host, device_token = await make_device_with_token(http, alice, "host")

    with_user_token = await handshake(server, host, alice.token, origin=EVIL)
    with_device_token = await handshake(server, host, device_token, origin=EVIL)
    with_subprotocol = await handshake(server, host, alice.token, "subprotocol", origin=EVIL)

    for refused in (with_user_token, with_device_token, with_subprotocol):
        assert_error(refused.reply, 403)
    assert not await is_online(http, host)


async def test_open_socket_without_origin_succeeds(
    server: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    """Phone apps send no Origin: by default they are all that may connect."""
    host, device_token = await make_device_with_token(http, alice, "host")

    assert (await handshake(server, host, alice.token)).status == 101
    assert (await handshake(server, host, device_token)).status == 101


@pytest.mark.parametrize(
    "origin",
    [
        EVIL,
        "null",  # sandboxed iframes and file:// pages
        "http://app.example",  # same host, another scheme
        "https://app.example.evil.example",  # the allowed origin as a prefix
        "https://evil.example/https://app.example",
        "https://sub.app.example",
        "https://app.example:8443",
        "",
    ],
    ids=["evil", "null", "http", "prefix", "path", "subdomain", "port", "empty"],
)
async def test_open_socket_from_unlisted_origin_returns_403_when_allowlist_set(
    settings: Settings, origin: str
) -> None:
    async with serving(settings, allowed_origins=f"{APP}, https://other.example") as served:
        alice = await make_account(served.http, "alice")
        host, _ = await make_device_with_token(served.http, alice, "host")

        assert (await handshake(served.live, host, alice.token, origin=APP)).status == 101
        assert (await handshake(served.live, host, alice.token, origin=origin)).status == 403
        assert (await handshake(served.live, host, alice.token)).status == 101


# --- CORS -----------------------------------------------------------------------------------------
def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


async def test_request_from_foreign_origin_gets_no_cors_grant_by_default(
    http: httpx.AsyncClient, alice: Account
) -> None:
    preflight = await http.options("/devices", headers=preflight_headers(EVIL))
    simple = await http.get("/devices", headers={"Origin": EVIL, **alice.headers})
    login = await http.post(
        "/auth/login",
        json={"username": alice.username, "password": alice.password},
        headers={"Origin": EVIL},
    )

    for response in (preflight, simple, login):
        assert "access-control-allow-origin" not in response.headers, cors_headers(response)
        assert "access-control-allow-credentials" not in response.headers


async def test_request_from_configured_cors_origin_gets_exactly_that_origin(
    settings: Settings,
) -> None:
    async with serving(settings, cors_origins=APP) as served:
        http = served.http
        alice = await make_account(http, "alice")

        app_preflight = await http.options("/devices", headers=preflight_headers(APP))
        app_get = await http.get("/devices", headers={"Origin": APP, **alice.headers})
        evil_preflight = await http.options("/devices", headers=preflight_headers(EVIL))
        evil_get = await http.get("/devices", headers={"Origin": EVIL, **alice.headers})
        lookalike = await http.get(
            "/devices", headers={"Origin": f"{APP}.evil.example", **alice.headers}
        )

        for granted in (app_preflight, app_get):
            assert granted.headers.get("access-control-allow-origin") == APP, cors_headers(granted)
        assert app_get.status_code == 200
        for refused in (evil_preflight, evil_get, lookalike):
            assert "access-control-allow-origin" not in refused.headers, cors_headers(refused)


# --- security headers ---------------------------------------------------------------------------
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

Call = Callable[[httpx.AsyncClient, Account], Awaitable[httpx.Response]]


async def get_devices(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.get("/devices", headers=alice.headers)


async def log_in(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.post(
        "/auth/login", json={"username": alice.username, "password": alice.password}
    )


async def read_openapi(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.get("/docs/openapi.json")


async def wrong_password(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.post(
        "/auth/login", json={"username": alice.username, "password": "wrong-password"}
    )


async def without_token(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.get("/devices")


async def unknown_path(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.get("/no/such/path", headers=alice.headers)


async def missing_device(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.delete("/devices/999999", headers=alice.headers)


async def body_not_json(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.post(
        "/devices",
        content=b"{not json",
        headers={**alice.headers, "Content-Type": "application/json"},
    )


async def invalid_field(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.post("/devices", json={"name": "", "type": "toaster"}, headers=alice.headers)


async def body_too_large(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.post(
        "/devices", json={"name": "x" * 100_000, "type": "host"}, headers=alice.headers
    )


async def wrong_method(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    return await http.put("/devices", headers=alice.headers)


async def host_offline(http: httpx.AsyncClient, alice: Account) -> httpx.Response:
    host, _ = await make_device_with_token(http, alice, "host")
    return await http.get("/sims", params={"host_device_id": host.id}, headers=alice.headers)


REPLIES: list[tuple[Call, int]] = [
    (get_devices, 200),
    (log_in, 200),
    (read_openapi, 200),
    (wrong_password, 401),
    (without_token, 401),
    (unknown_path, 404),
    (missing_device, 404),
    (body_not_json, 400),
    (invalid_field, 422),
    (body_too_large, 413),
    (wrong_method, 405),
    (host_offline, 503),
]


@pytest.mark.parametrize(("call", "status"), REPLIES, ids=lambda v: getattr(v, "__name__", v))
async def test_rest_reply_carries_security_headers(
    http: httpx.AsyncClient, alice: Account, call: Call, status: int
) -> None:
    response = await call(http, alice)

    assert response.status_code == status, response.text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{name}: {dict(response.headers)}"
    if response.url.path.startswith("/docs"):
        return  # the docs pages load Swagger UI's scripts: their own policy
    policy = response.headers.get("content-security-policy", "")
    directives = {d.strip() for d in policy.split(";")}
    assert "default-src 'none'" in directives, policy
    assert "frame-ancestors 'none'" in directives, policy


# --- secrets in logs ----------------------------------------------------------------------------
PASSWORD = "Sup3r-Secret-Pw"
NEW_PASSWORD = "N3w-Secret-Pw-2"
SERVER_LOGGERS = (
    "sanic.root",
    "sanic.error",
    "sanic.access",
    "sanic.server",
    "sanic.websockets",
    "websockets",
    "simbridge",
    "tortoise",
    "aerich",
    "asyncio",
)
# The ORM and the database drivers log each statement with its parameters at DEBUG.
DATABASE_DEBUG_LOGGERS = ("tortoise.db_client", "aiosqlite", "asyncpg")
# Our own test clients' loggers print the URLs they open (with `?token=`): not the server's.
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")


@dataclass
class Secrets:
    """Every credential the traffic used, by name."""

    values: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        assert value, name
        self.values[name] = value

    def add_jwt(self, name: str, token: str) -> None:
        self.add(name, token)
        self.add(f"{name} signature", token.rsplit(".", 1)[1])

    def found_in(self, text: str) -> list[str]:
        """The names of the secrets that occur in `text`.

        A pairing code is six digits: it counts only where it is not part of a longer number
        or of a timestamp's fraction of a second.
        """
        found = []
        for name, value in self.values.items():
            if value.isdigit():
                if re.search(rf"(?<![\d.]){value}(?!\d)", text):
                    found.append(name)
            elif value in text:
                found.append(name)
        return found


class Recorder(logging.Handler):
    """Keeps every record it sees once (it is attached to several loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: dict[int, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records.setdefault(id(record), record)

    def server_records(self) -> list[logging.LogRecord]:
        return [
            record for record in self.records.values() if not record.name.startswith(CLIENT_LOGGERS)
        ]


def record_text(record: logging.LogRecord) -> str:
    formatter = logging.Formatter()
    parts = [record.getMessage()]
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


@contextmanager
def every_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[Recorder]:
    """Every logger at DEBUG, and a handler on each named one as well as on the root: a logger
    that does not propagate (the CLI's `simbridge`, for one) is still heard.

    Called after the app is built: `create_app` sets the `simbridge` level, and Sanic's
    logging set-up resets its own loggers.
    """
    caplog.set_level(logging.DEBUG)
    for name in SERVER_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    recorder = Recorder()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in SERVER_LOGGERS)]
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        for logger in loggers:
            logger.removeHandler(recorder)


@dataclass
class Traffic:
    """One client session against a server: every REST call states the status it expects."""

    http: httpx.AsyncClient
    server: Server
    secrets: Secrets

    async def call(
        self,
        status: int,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        **options: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = await self.http.request(method, path, json=body, headers=headers, **options)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
        return reply.json() if reply.content else None

    async def socket(
        self, status: int, device: Device, token: str, carrier: str = "query", **options: Any
    ) -> None:
        reply = await handshake(self.server, device, token, carrier, **options)
        assert reply.status == status, (device, carrier, options)


async def exercise_everything(server: Server, max_body_bytes: int) -> Secrets:
    """Register, log in, use every credential on success and refusal paths, pair with a wrong
    and a right code, make errors, change the password. Returns what must never be logged."""
    secrets = Secrets()
    secrets.add("password", PASSWORD)
    secrets.add("new password", NEW_PASSWORD)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        t = Traffic(http, server, secrets)

        # accounts
        alice = {"username": "alice", "password": PASSWORD}
        await t.call(200, "POST", "/auth/register", alice)
        await t.call(200, "POST", "/auth/register", {"username": "mallory", "password": "m-pw-1"})
        await t.call(401, "POST", "/auth/login", {**alice, "password": PASSWORD + "x"})
        await t.call(401, "POST", "/auth/login", {**alice, "username": "nobody"})
        logged_in = await t.call(200, "POST", "/auth/login", alice)
        token = logged_in["token"]
        secrets.add_jwt("jwt", token)
        mallory_login = {"username": "mallory", "password": "m-pw-1"}
        mallory = (await t.call(200, "POST", "/auth/login", mallory_login))["token"]
        owner = Account("alice", PASSWORD, logged_in["user_id"], token)

        # devices, with their device tokens
        added = await t.call(200, "POST", "/devices", {"name": "phone", "type": "host"}, token)
        host, host_token = added["id"], added["device_token"]
        added = await t.call(200, "POST", "/devices", {"name": "pc", "type": "client"}, token)
        client, client_token = added["id"], added["device_token"]
        secrets.add("host device token", host_token)
        secrets.add("client device token", client_token)
        other = await t.call(200, "POST", "/devices", {"name": "m", "type": "host"}, mallory)
        await t.call(200, "GET", "/devices", token=token)
        host_device, client_device = Device(host, "host", owner), Device(client, "client", owner)

        # sockets: each way of carrying a credential, accepted, then refused
        await t.socket(101, host_device, token)
        await t.socket(101, client_device, client_token)
        await t.socket(101, host_device, token, "header")
        await t.socket(101, host_device, token, "subprotocol")
        await t.socket(401, host_device, f"{token}x")
        await t.socket(401, host_device, token[:-4])
        await t.socket(401, host_device, f"{token}x", "subprotocol")
        await t.socket(404, Device(other["id"], "host", owner), token)  # mallory's host
        await t.socket(403, Device(host, "client", owner), token)  # on the other type's path
        await t.socket(403, Device(client, "host", owner), client_token)
        await t.socket(401, host_device, client_token)
        await t.socket(403, host_device, host_token, origin=EVIL)

        # pairing: a wrong code, someone else spending the right one, then alice
        code = (await t.call(200, "POST", "/pair", params={"host_device_id": host}, token=token))[
            "code"
        ]
        secrets.add("pairing code", code)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        await t.call(
            400, "POST", "/pair/confirm", {"code": wrong, "client_device_id": client}, token
        )
        await t.call(
            404, "POST", "/pair/confirm", {"code": code, "client_device_id": client}, mallory
        )
        await t.call(
            200, "POST", "/pair/confirm", {"code": code, "client_device_id": client}, token
        )
        await t.call(
            400, "POST", "/pair/confirm", {"code": code, "client_device_id": client}, token
        )

        # a relayed command over device-token sockets, then a rotation that closes the host's
        async with (
            dial(server, host_device, host_token) as host_ws,
            dial(server, client_device, client_token) as client_ws,
        ):
            assert (await receive(host_ws))["type"] == "connected"
            assert (await receive(client_ws))["type"] == "connected"
            await send(client_ws, {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"})
            assert (await receive(host_ws))["req_id"] == "r1"
            await client_ws.send("{not json")
            assert await receive(client_ws) == {"error": "invalid JSON"}
            rotated = (await t.call(200, "POST", f"/devices/{host}/token", token=token))[
                "device_token"
            ]
            secrets.add("rotated host device token", rotated)
            await asyncio.wait_for(host_ws.wait_closed(), RECV_TIMEOUT)
        await t.socket(101, host_device, rotated)
        await t.socket(401, host_device, host_token)

        # errors, some with a credential in the query string or in a broken body
        broken = b'{"name": "' + PASSWORD.encode()
        await t.call(400, "POST", "/devices", token=token, content=broken)
        await t.call(405, "GET", f"/devices/{host}?token={token}", token=token)
        await t.call(404, "GET", f"/nowhere?token={token}&code={code}")
        await t.call(404, "DELETE", "/devices/999999", token=token)
        await t.call(401, "GET", "/devices", token=f"{token}x")
        await t.call(413, "POST", "/auth/login", {**alice, "pad": "x" * max_body_bytes})
        await t.call(422, "POST", "/auth/register", {**alice, "username": "al"})

        # the password change: the new password as a wrong current one first, then for real
        change = {"current_password": NEW_PASSWORD, "new_password": PASSWORD + "-2"}
        await t.call(401, "POST", "/auth/password", change, token)
        change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        secrets.add_jwt(
            "new jwt", (await t.call(200, "POST", "/auth/password", change, token))["token"]
        )
        await t.call(401, "GET", "/devices", token=token)
        await t.socket(401, host_device, token)
        again = await t.call(200, "POST", "/auth/login", {**alice, "password": NEW_PASSWORD})
        secrets.add_jwt("jwt after login", again["token"])
    return secrets


def leaks(texts: list[tuple[str, str]], secrets: Secrets) -> list[str]:
    """`where: which secrets` for every text that holds one."""
    return [
        f"{where}: {', '.join(found)}: {text[:300]!r}"
        for where, text in texts
        if (found := secrets.found_in(text))
    ]


async def logged_traffic(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> tuple[list[logging.LogRecord], Secrets]:
    """Every server-side log record of `exercise_everything`, and the secrets it used."""
    async with serving(settings, access_log=True, log_level="DEBUG") as served:
        with every_log_record(caplog) as recorder:
            secrets = await exercise_everything(served.live, settings.max_body_bytes)
            records = recorder.server_records()
    return records, secrets


def is_database_debug(record: logging.LogRecord) -> bool:
    return record.name.startswith(DATABASE_DEBUG_LOGGERS) and record.levelno <= logging.DEBUG


async def test_serve_traffic_logs_no_secret_in_server_or_framework_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    records, secrets = await logged_traffic(settings, caplog)

    # The capture did hear the server: its access log, and Sanic's own loggers.
    messages = [record.getMessage() for record in records]
    assert any(m.startswith("POST /auth/login 200") for m in messages), messages[:50]
    assert any(m.startswith("POST /auth/password 200") for m in messages)
    assert any(record.name.startswith("sanic.") for record in records)
    texts = [
        (f"{r.name}:{r.levelname}", record_text(r)) for r in records if not is_database_debug(r)
    ]
    found = leaks(texts, secrets)
    assert not found, "\n".join(found)


async def test_serve_traffic_logs_no_secret_in_database_debug_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator who turns on DEBUG to chase a slow query must not get credentials with it:
    the ORM and the driver log every statement with its parameters."""
    records, secrets = await logged_traffic(settings, caplog)

    database = [r for r in records if is_database_debug(r)]
    assert any("pairing_codes" in r.getMessage() for r in database)  # the capture heard them
    found = leaks([(f"{r.name}:{r.levelname}", record_text(r)) for r in database], secrets)
    assert not found, "\n".join(found)


async def test_refuse_socket_with_access_log_logs_status_and_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(settings, access_log=True) as served:
        alice = await make_account(served.http, "alice")
        host, _ = await make_device_with_token(served.http, alice, "host")
        with every_log_record(caplog) as recorder:
            bad_token = await handshake(served.live, host, "bad")
            evil = await handshake(served.live, host, alice.token, origin=EVIL)
            records = recorder.server_records()

    assert (bad_token.status, evil.status) == (401, 403)
    errors = [record_text(r) for r in records if r.levelno >= logging.ERROR]
    assert errors == []
    access = [r.getMessage() for r in records if r.name == "simbridge.access"]
    assert [line.rsplit(" ", 1)[0] for line in access] == [
        f"GET /ws/host/{host.id} 401",
        f"GET /ws/host/{host.id} 403",
    ]


# --- secrets in a real server's output ---------------------------------------------------------
async def test_serve_process_traffic_prints_no_secret(servers: Servers) -> None:
    server = await servers.start(SIMBRIDGE_ACCESS_LOG="true", SIMBRIDGE_LOG_LEVEL="DEBUG")
    secrets = await exercise_everything(server, Settings().max_body_bytes)
    assert await servers.stop(server) == 0, server.log()

    output = server.log()
    assert "POST /auth/login 200" in output, output[-2000:]  # the access log was on
    lines = [(f"line {n}", line) for n, line in enumerate(output.splitlines(), 1)]
    found = leaks(lines, secrets)
    assert not found, "\n".join(found)
