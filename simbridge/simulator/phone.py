"""What a simulated phone answers, and the events it can be told to raise: pure rules, no I/O.

A command is answered with a list of event frames, sent one `answer_delay` apart: `GET_SIMS`
with `SIM_INFO` (two SIMs), `SEND_SMS` with `SMS_SENT` then `SMS_DELIVERED`, `MAKE_CALL` with
`CALL_STATE` dialing, active, ended. Each carries the command's `req_id`. A command naming a SIM
the phone does not have (or a bad number) fails as a phone would: `SMS_SENT` with
`"status":"error"`, or one `CALL_STATE` `ended` with an `error`. Other commands are not answered.

A command without a `req_id` (the server adds one, contract §4, so only from a server that does
not) is still carried out, and its events carry no `req_id`: they reach every paired client
like an incoming SMS. `"req_id": null` would name no command and could be taken for one.
"""

from __future__ import annotations

import re
from typing import Any

Frame = dict[str, Any]

SIMS: list[Frame] = [
    {"slot": 1, "carrier": "SimBridge Mobile", "number": "+15550000001"},
    {"slot": 2, "carrier": "Simulated Telecom", "number": "+15550000002"},
]
DEFAULT_SIM = 1  # what a command without `sim` uses, like a phone's default SIM
NUMBER = re.compile(r"[0-9+*#]{1,32}")  # the contract's `to` (numbers, short codes, USSD)
MAX_BODY = 1600


def answers(command: Frame) -> list[Frame]:
    """The events that answer `command` (a frame of type `command`), in order; none for a
    command the phone does not know."""
    cmd, req_id = command.get("cmd"), command.get("req_id")
    if cmd == "GET_SIMS":
        return [event("SIM_INFO", req_id, sims=SIMS)]
    if cmd == "SEND_SMS":
        problem = _sim_problem(command) or _number_problem(command.get("to"))
        body = command.get("body")
        if problem is None and not (isinstance(body, str) and 0 < len(body) <= MAX_BODY):
            problem = f"the body must be 1-{MAX_BODY} characters"
        if problem is not None:
            return [event("SMS_SENT", req_id, status="error", error=problem)]
        return [event("SMS_SENT", req_id, status="ok"), event("SMS_DELIVERED", req_id, status="ok")]
    if cmd == "MAKE_CALL":
        problem = _sim_problem(command) or _number_problem(command.get("to"))
        if problem is not None:
            return [event("CALL_STATE", req_id, state="ended", error=problem)]
        return [event("CALL_STATE", req_id, state=s) for s in ("dialing", "active", "ended")]
    return []


def event(name: str, req_id: Any, **fields: Any) -> Frame:
    """An event frame answering the command `req_id`, or answering none when it is None."""
    frame = {"type": "event", "event": name, **fields}
    return frame if req_id is None else {**frame, "req_id": req_id}


def incoming_sms(sender: str, body: str, sim: int = DEFAULT_SIM) -> Frame:
    return {"type": "event", "event": "INCOMING_SMS", "sim": sim, "from": sender, "body": body}


def incoming_call(sender: str, sim: int = DEFAULT_SIM) -> Frame:
    return {"type": "event", "event": "INCOMING_CALL", "sim": sim, "from": sender}


def injection(line: str) -> Frame:
    """The event a line of the host's stdin asks for: `sms FROM BODY...` or `call FROM`.
    Raises ValueError with what is wrong."""
    words = line.strip().split(maxsplit=2)
    if not words:
        raise ValueError("empty line")
    kind, rest = words[0].lower(), words[1:]
    if kind == "sms" and len(rest) == 2:
        sender, body = rest
        problem = _number_problem(sender) or (
            None if len(body) <= MAX_BODY else f"the body must be 1-{MAX_BODY} characters"
        )
        if problem is None:
            return incoming_sms(sender, body)
    elif kind == "call" and len(rest) == 1:
        if (problem := _number_problem(rest[0])) is None:
            return incoming_call(rest[0])
    else:
        problem = "expected `sms FROM BODY` or `call FROM`"
    raise ValueError(problem)


def _sim_problem(command: Frame) -> str | None:
    sim = command.get("sim", DEFAULT_SIM)
    if isinstance(sim, int) and not isinstance(sim, bool) and any(s["slot"] == sim for s in SIMS):
        return None
    return f"no SIM in slot {sim!r}"


def _number_problem(number: Any) -> str | None:
    if isinstance(number, str) and NUMBER.fullmatch(number):
        return None
    return f"not a phone number: {number!r}"
