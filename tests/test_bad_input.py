"""Bad input, table-driven (contract §1, §3, §4).

Every REST case must come back as the contract's 4xx (400 body not a JSON object, 422 a field
missing / of the wrong type / out of range with `errors: [{"field", "message"}]`, 413 too big),
as JSON with a `detail` sentence, without traceback text; nothing may be stored; and the server
must go on serving. Every bad WebSocket frame gets an error frame (or, too big, the 1009 close)
and the relay goes on working.

The tables are looped over inside one test per endpoint (one server each, which keeps the run
short); a failure lists every case that went wrong.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from simbridge.config import Settings
from tests.helpers import (
    PASSWORD,
    Account,
    LiveServer,
    Pair,
    assert_next_is_pong,
    assert_relays,
    list_devices,
    login,
    make_account,
    make_device,
    paired_world,
    pairing_code,
    receive,
    send,
    serving,
    socket,
)

INVALID_JSON = {"error": "invalid JSON"}
UNKNOWN_TYPE = {"error": "unknown message type"}


# --- checking a reply ------------------------------------------------------------------------
def error_problems(reply: httpx.Response, status: int, fields: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with `reply` as the contract's error `status` naming `fields`; [] if fine."""
    if reply.status_code != status:
        return [f"status {reply.status_code}, expected {status}: {reply.text[:120]}"]
    found = []
    if not reply.headers.get("content-type", "").startswith("application/json"):
        found.append(f"content-type {reply.headers.get('content-type')!r}")
    if "Traceback" in reply.text or 'File "' in reply.text:
        found.append("traceback text in the body")
    try:
        body = reply.json()
    except ValueError:
        return [*found, f"body is not JSON: {reply.text[:200]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("detail"), str) or not body["detail"]:
        return [*found, f"no `detail` sentence: {body!r:.200}"]
    if status == 422:
        errors = body.get("errors")
        well_formed = isinstance(errors, list) and all(
            isinstance(error, dict)
            and isinstance(error.get("field"), str)
            and isinstance(error.get("message"), str)
            for error in errors
        )
        if not well_formed or not errors:
            found.append(f"`errors` is not a list of {{field, message}}: {errors!r:.200}")
        elif missing := set(fields) - {error["field"] for error in errors}:
            found.append(f"`errors` does not name {sorted(missing)}: {errors!r:.200}")
    return found


def report(problems: list[str]) -> str:
    return f"{len(problems)} bad case(s):\n  " + "\n  ".join(problems)


# --- the world a bad request meets -----------------------------------------------------------
@dataclass
class World:
    server: LiveServer
    http: httpx.AsyncClient
    alice: Account
    pair: Pair

    async def devices(self) -> list[dict[str, Any]]:
        return await list_devices(self.http, self.alice)


@pytest.fixture
async def world(server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair) -> World:
    return World(server, http, alice, pair)


# --- REST bodies -----------------------------------------------------------------------------
class Missing:
    """Marks a field left out of the body."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()
Bad = tuple[str, Any]  # (label, value); a callable value is applied to the field's valid value

DEVICE_ID: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("text", "abc"),
    ("the id as text", str),
    ("boolean", True),
    ("fraction", 1.5),
    ("object", {"id": 1}),
    ("list", [1]),
    ("zero", 0),
    ("negative", -1),
    ("2**31", 2**31),
    ("2**63", 2**63),
    ("10**30", 10**30),
]
SIM: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("text", "one"),
    ("number as text", "1"),
    ("boolean", True),
    ("fraction", 1.5),
    ("zero", 0),
    ("nine", 9),
    ("negative", -1),
    ("2**63", 2**63),
    ("10**30", 10**30),
    ("list", [1]),
    ("object", {}),
]
PHONE_NUMBER: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("integer", 5550100),
    ("empty", ""),
    ("33 digits", "1" * 33),
    ("letters", "CALLME"),
    ("space", "+1 555 0100"),
    ("full-width digits", "５５５０１００"),
    ("arabic-indic digits", "٥٥٥٠١٠٠"),
    ("zero-width space", "555\u200b0100"),
    ("trailing newline", "5550100\n"),
    ("boolean", True),
    ("list", ["5550100"]),
    ("object", {"number": "5550100"}),
]
SMS_TEXT: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("empty", ""),
    ("1601 characters", "x" * 1601),
    ("1601 emoji", "😀" * 1601),
    ("integer", 5),
    ("boolean", True),
    ("list", ["hi"]),
    ("object", {"text": "hi"}),
]
USERNAME: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("too short", "ab"),
    ("33 characters", "c" * 33),
    ("space", "car ol"),
    ("accented letter", "cårol"),
    ("emoji", "carol😀"),
    ("zero-width space", "car\u200bol"),
    ("right-to-left override", "\u202ecarol"),
    ("NUL", "car\x00ol"),
    ("trailing newline", "carol\n"),
    ("integer", 12345),
    ("boolean", True),
    ("list", ["carol"]),
    ("object", {"name": "carol"}),
]
NEW_PASSWORD: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("empty", ""),
    ("5 bytes", "12345"),
    ("73 bytes", "x" * 73),
    ("37 characters but 74 bytes", "é" * 37),
    ("integer", 12345678),
    ("boolean", True),
    ("list", ["secret123"]),
]
LOGIN_USERNAME: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("257 characters", "a" * 257),
    ("integer", 12345),
    ("boolean", True),
    ("list", ["alice"]),
    ("object", {}),
]
LOGIN_PASSWORD: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("1025 characters", "x" * 1025),
    ("integer", 12345678),
    ("boolean", False),
    ("list", ["secret123"]),
]
DEVICE_NAME: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("empty", ""),
    ("65 characters", "n" * 65),
    ("65 emoji", "📱" * 65),
    ("integer", 5),
    ("boolean", True),
    ("list", ["phone"]),
    ("object", {}),
]
DEVICE_TYPE: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("empty", ""),
    ("unknown", "router"),
    ("upper case", "HOST"),
    ("trailing space", "host "),
    ("integer", 1),
    ("boolean", True),
    ("list", ["host"]),
]
CODE: list[Bad] = [
    ("missing", MISSING),
    ("null", None),
    ("integer", 123456),
    ("boolean", True),
    ("list", ["123456"]),
    ("object", {}),
    ("65 characters", "1" * 65),
]


@dataclass(frozen=True)
class BodyEndpoint:
    path: str
    valid: Callable[[World], Awaitable[dict[str, Any]]]
    bad: dict[str, list[Bad]] = field(default_factory=dict)


async def _registration(world: World) -> dict[str, Any]:
    return {"username": "carol", "password": PASSWORD}


async def _login(world: World) -> dict[str, Any]:
    return {"username": world.alice.username, "password": world.alice.password}


async def _new_device(world: World) -> dict[str, Any]:
    return {"name": "spare phone", "type": "host"}


async def _confirmation(world: World) -> dict[str, Any]:
    code = await pairing_code(world.http, world.alice, world.pair.host)
    return {"code": code, "client_device_id": world.pair.client.id}


async def _sms(world: World) -> dict[str, Any]:
    return {"to_device_id": world.pair.host.id, "sim": 1, "to": "+15550100", "body": "hi"}


async def _call(world: World) -> dict[str, Any]:
    return {"to_device_id": world.pair.host.id, "sim": 1, "to": "*100#"}


BODY_ENDPOINTS = [
    BodyEndpoint("/auth/register", _registration, {"username": USERNAME, "password": NEW_PASSWORD}),
    BodyEndpoint("/auth/login", _login, {"username": LOGIN_USERNAME, "password": LOGIN_PASSWORD}),
    BodyEndpoint("/devices", _new_device, {"name": DEVICE_NAME, "type": DEVICE_TYPE}),
    BodyEndpoint("/pair/confirm", _confirmation, {"code": CODE, "client_device_id": DEVICE_ID}),
    BodyEndpoint(
        "/sms", _sms, {"to_device_id": DEVICE_ID, "sim": SIM, "to": PHONE_NUMBER, "body": SMS_TEXT}
    ),
    BodyEndpoint("/call", _call, {"to_device_id": DEVICE_ID, "sim": SIM, "to": PHONE_NUMBER}),
]

NOT_AN_OBJECT: list[tuple[str, bytes]] = [
    ("empty body", b""),
    ("whitespace", b" \r\n\t"),
    ("plain text", b"hello"),
    ("truncated object", b'{"name": "x"'),
    ("trailing garbage", b'{"name": "x"} x'),
    ("two objects", b"{}{}"),
    ("single quotes", b"{'name': 'x'}"),
    ("NaN", b'{"name": NaN}'),
    ("invalid UTF-8", b'{"name": "\xff\xfe"}'),
    ("lone surrogate escape", b'{"name": "\\ud800"}'),  # not text, so not JSON we can read
    ("form encoded", b"name=x&type=host"),
    ("array", b"[]"),
    ("array of an object", b'[{"name": "x", "type": "host"}]'),
    ("string", b'"host"'),
    ("number", b"42"),
    ("null", b"null"),
    ("true", b"true"),
    ("10,000 nested lists", b"[" * 10_000 + b"]" * 10_000),
]


async def post_raw(world: World, path: str, raw: bytes) -> httpx.Response:
    headers = {**world.alice.headers, "Content-Type": "application/json"}
    return await world.http.post(path, content=raw, headers=headers)


async def assert_nothing_changed(
    http: httpx.AsyncClient, owner: Account, devices_before: list[dict[str, Any]]
) -> None:
    """The server still answers, no device appeared or changed, and no carol was registered."""
    assert await list_devices(http, owner) == devices_before
    registered = await login(http, "carol")
    assert registered.status_code == 401, "a rejected registration created carol"


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda endpoint: endpoint.path)
async def test_post_non_object_body_returns_400(world: World, endpoint: BodyEndpoint) -> None:
    before = await world.devices()
    problems = []
    for label, raw in NOT_AN_OBJECT:
        reply = await post_raw(world, endpoint.path, raw)
        problems += [f"{label}: {problem}" for problem in error_problems(reply, 400)]
    assert not problems, report(problems)
    await assert_nothing_changed(world.http, world.alice, before)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda endpoint: endpoint.path)
async def test_post_bad_field_returns_422_naming_it(world: World, endpoint: BodyEndpoint) -> None:
    valid = await endpoint.valid(world)
    before = await world.devices()
    problems = []

    empty = await world.http.post(endpoint.path, json={}, headers=world.alice.headers)
    required = tuple(endpoint.bad)
    problems += [f"{{}}: {problem}" for problem in error_problems(empty, 422, required)]

    for name, bad_values in endpoint.bad.items():
        for label, value in bad_values:
            body = dict(valid)
            if value is MISSING:
                del body[name]
            else:
                body[name] = value(valid[name]) if callable(value) else value
            reply = await world.http.post(endpoint.path, json=body, headers=world.alice.headers)
            problems += [
                f"{name} {label} ({body.get(name, MISSING)!r:.40}): {problem}"
                for problem in error_problems(reply, 422, (name,))
            ]
    assert not problems, report(problems)
    await assert_nothing_changed(world.http, world.alice, before)


# --- REST query strings ----------------------------------------------------------------------
@dataclass(frozen=True)
class QueryEndpoint:
    method: str
    path: str
    id_param: str
    bad: dict[str, list[Bad]]


QUERY_ID: list[Bad] = [
    ("missing", MISSING),
    ("empty", ""),
    ("text", "abc"),
    ("fraction", "1.5"),
    ("exponent", "1e3"),
    ("hexadecimal", "0x1"),
    ("zero", "0"),
    ("negative", "-1"),
    ("2**31", str(2**31)),
    ("2**63", str(2**63)),
    ("10**30", str(10**30)),
    ("boolean", "true"),
    ("arabic-indic digit", "١"),
    ("emoji", "😀"),
    ("NUL", "\x00"),
]
LIMIT: list[Bad] = [
    ("text", "many"),
    ("fraction", "2.5"),
    ("zero", "0"),
    ("negative", "-5"),
    ("501", "501"),
    ("10**30", str(10**30)),
]
QUERY_ENDPOINTS = [
    QueryEndpoint("POST", "/pair", "host_device_id", {"host_device_id": QUERY_ID}),
    QueryEndpoint("GET", "/sims", "host_device_id", {"host_device_id": QUERY_ID}),
    QueryEndpoint("GET", "/history", "device_id", {"device_id": QUERY_ID, "limit": LIMIT}),
]


@pytest.mark.parametrize("endpoint", QUERY_ENDPOINTS, ids=lambda endpoint: endpoint.path)
async def test_query_bad_value_returns_422_naming_it(world: World, endpoint: QueryEndpoint) -> None:
    valid = {endpoint.id_param: str(world.pair.host.id)}
    before = await world.devices()
    problems = []
    for name, bad_values in endpoint.bad.items():
        for label, value in bad_values:
            params = dict(valid)
            if value is MISSING:
                del params[name]
            else:
                params[name] = value
            reply = await world.http.request(
                endpoint.method, endpoint.path, params=params, headers=world.alice.headers
            )
            problems += [
                f"{name} {label}: {problem}" for problem in error_problems(reply, 422, (name,))
            ]

    # The id in a JSON body instead of the query string is still a missing query parameter.
    reply = await world.http.request(
        endpoint.method, endpoint.path, json=valid, headers=world.alice.headers
    )
    problems += [
        f"id in a JSON body: {problem}"
        for problem in error_problems(reply, 422, (endpoint.id_param,))
    ]
    assert not problems, report(problems)
    await assert_nothing_changed(world.http, world.alice, before)


# --- too big ---------------------------------------------------------------------------------
async def test_post_oversized_body_returns_413(settings: Settings) -> None:
    async with serving(settings, max_body_bytes=1024) as served:
        http = served.http
        alice = await make_account(http, "alice")
        host = await make_device(http, alice, "host")
        before = await list_devices(http, alice)
        filler = "x" * 2048
        bodies = {
            "/auth/register": {"username": "carol", "password": PASSWORD, "pad": filler},
            "/auth/login": {"username": "alice", "password": filler},
            "/devices": {"name": "phone", "type": "host", "pad": filler},
            "/pair/confirm": {"code": "123456", "client_device_id": host.id, "pad": filler},
            "/sms": {"to_device_id": host.id, "sim": 1, "to": "1", "body": filler},
            "/call": {"to_device_id": host.id, "sim": 1, "to": "1", "pad": filler},
        }
        problems = []
        for path, body in bodies.items():
            reply = await http.post(path, json=body, headers=alice.headers)
            problems += [f"{path}: {problem}" for problem in error_problems(reply, 413)]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size shows late
            yield b'{"name": "phone", "type": "host", "pad": "'
            for _ in range(8):
                yield b"x" * 512
            yield b'"}'

        reply = await http.post("/devices", content=chunks(), headers=alice.headers)
        problems += [f"chunked /devices: {problem}" for problem in error_problems(reply, 413)]
        assert not problems, report(problems)
        await assert_nothing_changed(http, alice, before)


# --- routes and methods ----------------------------------------------------------------------
async def test_request_unknown_route_returns_404_json(world: World) -> None:
    paths = [
        "/",
        "/nope",
        "/devices/1/nothing",
        "/auth",
        "/auth/register/now",
        "/history/1",
        "/ws/host",
        "/ws/host/abc",
        "/ws/router/1",
        "/%00",
        "/😀",
    ]
    problems = []
    for path in paths:
        reply = await world.http.get(path, headers=world.alice.headers)
        problems += [f"GET {path}: {problem}" for problem in error_problems(reply, 404)]
    assert not problems, report(problems)
    assert await world.devices()


async def test_request_wrong_method_returns_405_json(world: World) -> None:
    attempts = [
        ("GET", "/auth/register"),
        ("GET", "/auth/login"),
        ("PUT", "/devices"),
        ("DELETE", "/devices"),
        ("GET", "/pair"),
        ("GET", "/pair/confirm"),
        ("GET", "/sms"),
        ("PATCH", "/call"),
        ("POST", "/sims"),
        ("POST", "/history"),
        ("DELETE", "/history"),
        ("BREW", "/devices"),
    ]
    problems = []
    for method, path in attempts:
        reply = await world.http.request(method, path, headers=world.alice.headers)
        problems += [f"{method} {path}: {problem}" for problem in error_problems(reply, 405)]
    assert not problems, report(problems)
    assert await world.devices()


# --- WebSocket frames ------------------------------------------------------------------------
async def assert_fresh_sockets_relay(world: World) -> None:
    async with (
        socket(world.server, world.pair.host) as host,
        socket(world.server, world.pair.client) as client,
    ):
        await assert_relays(host, client)


BAD_FRAMES: list[tuple[str, str | bytes, list[dict[str, Any]]]] = [
    ("empty", "", [INVALID_JSON]),
    ("plain text", "hello", [INVALID_JSON]),
    ("truncated object", '{"type": "command"', [INVALID_JSON]),
    ("binary garbage", b"\xff\x00\xfe\x81", [INVALID_JSON]),
    ("binary UTF-16", '{"type": "ping"}'.encode("utf-16"), [INVALID_JSON]),
    ("array", '[{"type": "ping"}]', [INVALID_JSON]),
    ("string", '"ping"', [INVALID_JSON]),
    ("number", "42", [INVALID_JSON]),
    ("null", "null", [INVALID_JSON]),
    ("NaN", '{"type": "command", "sim": NaN}', [INVALID_JSON]),
    ("10,000 nested lists", "[" * 10_000 + "]" * 10_000, [INVALID_JSON]),
    # An object, but nested past any sane parser's depth: refused either way, never a crash.
    ("10,000 nested objects", '{"a":' * 10_000 + "1" + "}" * 10_000, [INVALID_JSON, UNKNOWN_TYPE]),
    ("no type", '{"cmd": "GET_SIMS"}', [UNKNOWN_TYPE]),
    ("type not a string", '{"type": ["command"]}', [UNKNOWN_TYPE]),
]


async def test_send_bad_frame_replies_error_and_keeps_relaying(world: World) -> None:
    async with (
        socket(world.server, world.pair.host) as host,
        socket(world.server, world.pair.client) as client,
    ):
        for sender in (client, host):
            for label, frame, acceptable in BAD_FRAMES:
                await sender.send(frame)
                reply = await receive(sender)
                assert reply in acceptable, f"{label}: {reply}"
            await assert_next_is_pong(sender)
        # Nothing of the above reached the host: the next thing it hears is the next command.
        await assert_relays(host, client)
    await assert_fresh_sockets_relay(world)


HUGE = 123_456_789_012_345_678_901_234_567_890  # > 2**64: no machine integer holds it


async def test_send_frame_with_huge_numbers_is_relayed(world: World) -> None:
    async with (
        socket(world.server, world.pair.host) as host,
        socket(world.server, world.pair.client) as client,
    ):
        command = {"type": "command", "cmd": "SEND_SMS", "sim": HUGE, "req_id": 2**64, "n": 2**63}
        await send(client, command)
        assert await receive(host) == command

        event = {"type": "event", "event": "SIM_INFO", "iccid": HUGE, "req_id": 2**64}
        await send(host, event)
        assert await receive(client) == event

        for target in (HUGE, 2**63, -(2**63) - 1):
            await client.send(f'{{"type": "command", "cmd": "GET_SIMS", "to_device_id": {target}}}')
            reply = await receive(client)
            assert reply.get("error") == "not paired", f"to_device_id {target}: {reply}"
        await assert_relays(host, client)
    await assert_fresh_sockets_relay(world)


async def test_send_command_without_req_id_keeps_huge_integer_exact(world: World) -> None:
    """The server adds `req_id` and must forward the rest unchanged (contract §4)."""
    async with (
        socket(world.server, world.pair.host) as host,
        socket(world.server, world.pair.client) as client,
    ):
        command = {"type": "command", "cmd": "SEND_SMS", "sim": 1, "to": "1", "ref": HUGE}
        await send(client, command)
        forwarded = await receive(host)
        assert isinstance(forwarded.pop("req_id", None), str)
        assert forwarded == command


async def test_get_history_keeps_huge_integer_exact(world: World) -> None:
    """`payload` is the JSON object that was relayed (contract §3), digits and all."""
    async with (
        socket(world.server, world.pair.host) as host,
        socket(world.server, world.pair.client) as client,
    ):
        event = {"type": "event", "event": "SIM_INFO", "iccid": HUGE, "req_id": "sims-1"}
        await send(host, event)
        assert await receive(client) == event
    reply = await world.http.get(
        "/history", params={"device_id": world.pair.host.id}, headers=world.alice.headers
    )
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.text)[0]["payload"] == event


async def test_send_oversized_frame_closes_with_1009(settings: Settings) -> None:
    async with paired_world(settings, max_message_bytes=1024) as paired:
        live, host, client = paired.live, paired.pair.host, paired.pair.client
        world = World(live, paired.http, host.owner, paired.pair)
        oversized: list[str | bytes] = [
            json.dumps({"type": "command", "cmd": "SEND_SMS", "body": "x" * 2048}),
            b"x" * 2048,
        ]
        async with socket(live, host) as host_ws:
            for frame in oversized:
                async with socket(live, client) as client_ws:
                    await client_ws.send(frame)
                    with pytest.raises(ConnectionClosed) as closed:
                        await receive(client_ws)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 1009, f"{frame!r:.40}: {closed.value}"
                # The host's socket was not touched, and the relay works with a fresh client.
                async with socket(live, client) as client_ws:
                    await assert_relays(host_ws, client_ws)
        await assert_fresh_sockets_relay(world)
