"""The simulator's rules, without a server: what the simulated phone answers, the lines its
host and client read from stdin, the reconnection backoff, and (over fake sockets and a fake
clock) when a link counts a connection as a failure and where it resumes."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from simbridge.simulator import connection, phone
from simbridge.simulator.account import DeviceAccess, Login, SimulatorError
from simbridge.simulator.client import command_for
from simbridge.simulator.connection import FROM_NOW, Backoff, Link
from simbridge.simulator.host import COMMANDS_IN_PROGRESS, SimulatedHost


def command(cmd: str, **fields: Any) -> dict[str, Any]:
    return {"type": "command", "cmd": cmd, "req_id": "r", **fields}


def test_each_command_is_answered_with_its_events_and_req_id() -> None:
    sims = phone.answers(command("GET_SIMS"))
    assert [e["event"] for e in sims] == ["SIM_INFO"]
    assert [s["slot"] for s in sims[0]["sims"]] == [1, 2]
    sms = phone.answers(command("SEND_SMS", sim=2, to="+15551234", body="Hi"))
    assert [(e["event"], e["status"]) for e in sms] == [("SMS_SENT", "ok"), ("SMS_DELIVERED", "ok")]
    call = phone.answers(command("MAKE_CALL", to="*100#"))  # no sim: the default SIM
    assert [(e["event"], e["state"]) for e in call] == [
        ("CALL_STATE", "dialing"),
        ("CALL_STATE", "active"),
        ("CALL_STATE", "ended"),
    ]
    for event in sims + sms + call:
        assert event["type"] == "event" and event["req_id"] == "r", event
    assert phone.answers(command("REBOOT")) == []  # unknown commands are not answered


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"sim": 3, "to": "+1555", "body": "Hi"}, "no SIM in slot 3"),
        ({"sim": True, "to": "+1555", "body": "Hi"}, "no SIM in slot True"),
        ({"sim": "1", "to": "+1555", "body": "Hi"}, "no SIM in slot '1'"),
        ({"sim": 1, "to": "555-1234", "body": "Hi"}, "not a phone number: '555-1234'"),
        ({"sim": 1, "body": "Hi"}, "not a phone number: None"),
        ({"sim": 1, "to": "+1555", "body": ""}, "the body must be 1-1600 characters"),
        ({"sim": 1, "to": "+1555", "body": "x" * 1601}, "the body must be 1-1600 characters"),
    ],
)
def test_a_message_the_phone_cannot_send_fails_like_on_a_phone(
    fields: dict[str, Any], error: str
) -> None:
    assert phone.answers(command("SEND_SMS", **fields)) == [
        {"type": "event", "event": "SMS_SENT", "status": "error", "error": error, "req_id": "r"}
    ]


def test_a_call_the_phone_cannot_place_ends_at_once() -> None:
    assert phone.answers(command("MAKE_CALL", sim=9, to="+1555")) == [
        {
            "type": "event",
            "event": "CALL_STATE",
            "state": "ended",
            "error": "no SIM in slot 9",
            "req_id": "r",
        }
    ]


def test_injection_lines() -> None:
    assert phone.injection("sms +15551234 hello  there\n") == phone.incoming_sms(
        "+15551234", "hello  there"
    )
    assert phone.injection("CALL +15551234") == phone.incoming_call("+15551234")
    for line, problem in [
        ("", "empty line"),
        ("sms +15551234", "expected `sms FROM BODY` or `call FROM`"),
        ("call +1 +2", "expected `sms FROM BODY` or `call FROM`"),
        ("call alice", "not a phone number: 'alice'"),
        ("sms +1 " + "x" * 1601, "the body must be 1-1600 characters"),
    ]:
        with pytest.raises(ValueError) as refused:
            phone.injection(line)
        assert str(refused.value) == problem, line


def test_client_lines() -> None:
    assert command_for("sims", "r") == command("GET_SIMS")
    assert command_for(" sms 2 +15551234 hello there ", "r") == command(
        "SEND_SMS", sim=2, to="+15551234", body="hello there"
    )
    assert command_for("call 1 +15551234", "r") == command("MAKE_CALL", sim=1, to="+15551234")
    assert command_for("ping", "r") == {"type": "ping"}
    raw = '{"type":"command","cmd":"GET_SIMS","offline":"queue"}'
    assert command_for(raw, "r") == {"type": "command", "cmd": "GET_SIMS", "offline": "queue"}
    for line in ("", "sms one +1 hi", "call 1", "sims now", "[1]", "{nope"):
        with pytest.raises(ValueError):
            command_for(line, "r")


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(first=0.5, cap=4.0, attempts=5)
    lowest = [backoff.delay(n, draw=lambda: 0.0) for n in range(1, 7)]
    highest = [backoff.delay(n, draw=lambda: 1.0) for n in range(1, 7)]
    assert highest == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert lowest == [d / 2 for d in highest]
    assert backoff.delay(10_000) <= 4.0  # no overflow however many attempts


def test_a_server_url_must_be_http() -> None:
    assert Login("https://relay.example/", "a", "p").ws_url == "wss://relay.example"
    assert Login("http://127.0.0.1:8100", "a", "p").ws_url == "ws://127.0.0.1:8100"
    with pytest.raises(SimulatorError, match="must start with http"):
        Login("ws://127.0.0.1:8100", "a", "p")
    assert "secret-password" not in repr(Login("http://h", "a", "secret-password"))


def test_a_command_without_req_id_is_answered_without_one() -> None:
    """Not with `"req_id": null`: the server adds a req_id (contract §4), and an event that
    names none reaches every paired client, like an incoming SMS."""
    for req_id in ({}, {"req_id": None}):
        commands = [
            {"type": "command", "cmd": "GET_SIMS", **req_id},
            {"type": "command", "cmd": "SEND_SMS", "to": "+1555", "body": "Hi", **req_id},
            {"type": "command", "cmd": "SEND_SMS", "sim": 9, **req_id},
            {"type": "command", "cmd": "MAKE_CALL", "to": "+1555", **req_id},
        ]
        events = [e for c in commands for e in phone.answers(c)]
        assert len(events) == 7
        assert all("req_id" not in e for e in events), events


# --- a link over fake sockets, with a fake clock --------------------------------------------
@dataclass(frozen=True)
class CountingBackoff(Backoff):
    """Records the failure count of each wait, and waits not at all."""

    counts: list[int] = field(default_factory=list)

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        self.counts.append(attempt)
        return 0.0


@dataclass
class FakeServer:
    """Stands for `websockets`' `connect`: each dial gets the next scripted socket, which sends
    its frames then closes `up_for` seconds (of `now`, the link's clock) after its greeting.
    The last one sets `stop` as it closes."""

    sockets: list[tuple[list[dict[str, Any]], float]]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    now: float = 0.0
    dialled: list[str] = field(default_factory=list)

    def connect(self, url: str, **_: Any) -> FakeSocket:
        self.dialled.append(url)
        frames, up_for = self.sockets.pop(0)
        return FakeSocket(self, frames, up_for, last=not self.sockets)

    def clock(self) -> float:
        return self.now


@dataclass
class FakeSocket:
    server: FakeServer
    frames: list[dict[str, Any]]
    up_for: float
    last: bool
    close_code: int = 1006

    async def __aenter__(self) -> FakeSocket:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def __aiter__(self) -> AsyncIterator[str]:
        for frame in self.frames:
            yield json.dumps(frame)
        self.server.now += self.up_for
        if self.last:
            self.server.stop.set()

    async def send(self, text: str) -> None:
        return None

    async def close(self) -> None:
        return None


def greeting(seq: int) -> dict[str, Any]:
    return {"type": "connected", "device_id": 1, "seq": seq}


async def run_link(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer, backoff: Backoff
) -> tuple[Link, list[str], list[dict[str, Any]]]:
    """Run a host's link against `server` until its last socket closes: the link, its output
    lines and the frames it handed on."""
    monkeypatch.setattr(connection, "connect", server.connect)
    lines: list[str] = []
    handed: list[dict[str, Any]] = []

    async def handle(frame: dict[str, Any]) -> None:
        handed.append(frame)

    device = DeviceAccess(device_id=1, kind="host", name="phone", token="t")
    link = Link("ws://fake", device, lines.append, backoff, clock=server.clock)
    await asyncio.wait_for(link.run(handle, server.stop), 5)
    return link, lines, handed


async def test_only_a_connection_that_stayed_up_resets_the_failure_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that greets and closes at once is a failure each time (the waits grow, and the
    link would give up), not a success that starts the count afresh at the shortest wait."""
    backoff = CountingBackoff(stable=10.0)
    up_for = [0.0, 9.0, 0.0, 10.0, 0.0, 0.0]
    server = FakeServer([([greeting(0)], up) for up in up_for])
    await run_link(monkeypatch, server, backoff)
    assert backoff.counts == [1, 2, 3, 1, 2]  # reset only by the one up 10 s

    backoff = CountingBackoff(attempts=3)
    server = FakeServer([([greeting(0)], 0.0)] * 10)
    with pytest.raises(SimulatorError, match="gave up after 3 attempts: closed with 1006"):
        await run_link(monkeypatch, server, backoff)


async def test_a_greeting_below_the_latest_seq_is_adopted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that lost its count (restarted with an in-memory registry) numbers afresh: the
    link resumes from the greeting's lower seq, or it would skip every frame below its own."""
    command = {"type": "command", "cmd": "GET_SIMS", "req_id": "r"}
    server = FakeServer(
        [
            ([greeting(5), {**command, "seq": 6}, {**command, "seq": 7}], 0.0),
            ([greeting(2), {**command, "seq": 3}], 0.0),  # the server lost seqs 3-7
            ([greeting(3)], 0.0),
        ]
    )
    link, lines, handed = await run_link(monkeypatch, server, CountingBackoff())
    assert server.dialled == [
        f"ws://fake/ws/host/1?since={FROM_NOW}",
        "ws://fake/ws/host/1?since=7",
        "ws://fake/ws/host/1?since=3",
    ]
    assert link.latest_seq == 3
    assert "# the server's latest seq 2 is below ours (7): it lost its count; resuming from 2" in (
        lines
    )
    assert [frame.get("seq") for frame in handed] == [5, 6, 7, 2, 3, 3]


# --- the host's commands in progress ---------------------------------------------------------
class RecordingHost(SimulatedHost):
    """A host without a socket: what it sends is recorded."""

    def __init__(self, answer_delay: float) -> None:
        login = Login("http://127.0.0.1:1", "alice", "password")
        super().__init__(login, device_id=1, answer_delay=answer_delay, output=lambda _: None)
        self.sent: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)


async def settle() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


async def test_the_host_carries_out_a_bounded_number_of_commands_at_once() -> None:
    """The others wait their turn, in order (a phone sends an SMS late rather than refuse it),
    and receiving them does not wait."""
    host = RecordingHost(answer_delay=3600)  # each SMS is sent, then delivered an hour later
    host.started()
    try:
        for number in range(COMMANDS_IN_PROGRESS + 5):
            sms = command("SEND_SMS", to="+1555", body="Hi") | {"req_id": str(number)}
            await asyncio.wait_for(host.handle(sms), 1)
        await settle()
        assert [(e["event"], e["req_id"]) for e in host.sent] == [
            ("SMS_SENT", str(n)) for n in range(COMMANDS_IN_PROGRESS)
        ]
    finally:
        await host.stopping()

    host = RecordingHost(answer_delay=0)
    host.started()
    try:
        for number in range(3 * COMMANDS_IN_PROGRESS):
            await host.handle(command("GET_SIMS") | {"req_id": str(number)})
        await settle()
        assert [e["req_id"] for e in host.sent] == [str(n) for n in range(3 * COMMANDS_IN_PROGRESS)]
    finally:
        await host.stopping()
