"""The simulator's pure rules, without a server: what the simulated phone answers, the lines
its host and client read from stdin, and the reconnection backoff."""

from __future__ import annotations

from typing import Any

import pytest

from simbridge.simulator import phone
from simbridge.simulator.account import Login, SimulatorError
from simbridge.simulator.client import command_for
from simbridge.simulator.connection import Backoff


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
