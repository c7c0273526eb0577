"""Property-based fuzzing of WebSocket frames (contract §4) with hypothesis.

A paired host and client stay connected to one live server while hypothesis sends hundreds of
generated frames through them: arbitrary JSON values, objects shaped like protocol messages
(`type` command / event / ping / anything, `to_device_id` and `req_id` of every JSON type,
64-bit edge and larger integers), in several layouts, as text or binary frames, and raw text and
bytes. For each frame an oracle written from the contract says what must happen: exactly one
of the contract's reply frames to the sender, or the frame relayed to the peer unchanged (a
command with a server-made `req_id` when it had none), and nothing else; the socket stays open.
Afterwards the same sockets still relay a GET_SIMS / SIM_INFO round trip, an oversized frame is
closed with 1009 and nothing else is, and the REST API still answers.

The live server runs in the test's event loop; the fuzzer uses the synchronous `websockets`
client from a worker thread while the loop goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from simbridge.config import Settings
from tests.helpers import (
    Account,
    LiveServer,
    Pair,
    make_account,
    make_device,
    receive,
    send,
    socket,
)

EXAMPLES = 300
RECV_TIMEOUT = 5.0
PING = json.dumps({"type": "ping"})
PONG = {"type": "pong"}
INVALID_JSON = {"error": "invalid JSON"}
UNKNOWN_TYPE = {"error": "unknown message type"}
NO_PAIRED_HOST = {"error": "no paired host"}
NO_PAIRED_CLIENT = {"error": "no paired client"}
SERVER_REQ_ID = re.compile(r"[0-9a-f]{32}")  # UUID4 hex (contract §3)
# Frame-rate limits, where the server has them (looked up by name): the fuzzer explores what
# frames say, not how fast they come.
UNLIMITED = {"ws_messages_per_second": 1_000_000.0, "ws_message_burst": 1_000_000}

Frame = str | bytes
# Frames replayed first on every run (`@example`): two that exposed bugs (integers beyond 64
# bits came back as floats), and the two ways the server itself writes a req_id into a frame.
HUGE = 123_456_789_012_345_678_901_234_567_890  # > 2**64
BIG_TARGET = json.dumps({"type": "command", "to_device_id": -(2**63) - 1})
NULL_REQ_ID_BIG_NUMBER = json.dumps({"type": "command", "req_id": None, "ref": HUGE})
NO_REQ_ID_AFTER_WHITESPACE = b' \n{"type":"command","cmd":"GET_SIMS"}'
EVENT_NULL_REQ_ID = '{"type":"event","event":"SIM_INFO","req_id":null}'  # stays null


class Role(Enum):
    HOST = "host"
    CLIENT = "client"

    @property
    def peer(self) -> Role:
        return Role.CLIENT if self is Role.HOST else Role.HOST


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The usual test settings, frame-rate limits lifted (see `UNLIMITED`)."""
    known = {each.name for each in fields(Settings)}
    lifted: dict[str, Any] = {k: v for k, v in UNLIMITED.items() if k in known}
    return replace(settings, **lifted)


# --- strategies -------------------------------------------------------------------------------
# Integers at and beyond the edges of 64 bits, where a parser may switch to floats or give up.
EDGE_INTEGERS = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
BIG_INTEGERS = st.integers(min_value=2**64, max_value=2**200) | st.integers(
    min_value=-(2**200), max_value=-(2**63) - 1
)
JSON_SCALARS: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    EDGE_INTEGERS,
    BIG_INTEGERS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES: SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE_TYPES = st.sampled_from(["command", "event", "ping"]) | st.text(max_size=10)
# json.dumps options: the relay must not depend on how the sender lays out its JSON.
LAYOUTS: list[dict[str, Any]] = [
    {},
    {"separators": (",", ":")},
    {"indent": 2},
    {"ensure_ascii": False},
]


def messages(device_ids: list[int]) -> SearchStrategy[dict[str, Any]]:
    """Objects shaped like protocol messages; `device_ids` are real ids to aim at."""
    targets = st.sampled_from(device_ids) | JSON_VALUES
    shaped = st.fixed_dictionaries(
        {"type": MESSAGE_TYPES},
        optional={
            "to_device_id": targets,
            "req_id": st.text(max_size=16) | JSON_VALUES,
            "cmd": st.sampled_from(["GET_SIMS", "SEND_SMS", "MAKE_CALL"]) | JSON_VALUES,
            "event": st.sampled_from(["SIM_INFO", "SMS_RECEIVED", "CALL_STATE"]) | JSON_VALUES,
            "sim": st.integers(min_value=1, max_value=8) | JSON_VALUES,
            "body": JSON_VALUES,
        },
    )
    extra = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)
    return st.builds(lambda extra, shaped: {**extra, **shaped}, extra, shaped)


def encoded(values: SearchStrategy[Any]) -> SearchStrategy[Frame]:
    """`values` as JSON text in one of several layouts, sent as a text or a binary frame."""

    def encode(value: Any, layout: dict[str, Any], lead: str, binary: bool) -> Frame:
        text = lead + json.dumps(value, **layout)
        return text.encode() if binary else text

    return st.builds(
        encode, values, st.sampled_from(LAYOUTS), st.sampled_from(["", " ", "\n\t"]), st.booleans()
    )


def frames(device_ids: list[int]) -> SearchStrategy[Frame]:
    shaped = encoded(messages(device_ids))
    return st.one_of(
        shaped,  # listed three times: most frames should get past parsing
        shaped,
        shaped,
        encoded(JSON_VALUES),
        st.text(max_size=64),
        st.binary(max_size=64),
    )


# --- the oracle -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    reply: dict[str, Any] | None = None  # what the sender hears back
    relayed: dict[str, Any] | None = None  # what the peer receives instead


def parse_strictly(frame: Frame) -> Any:
    """RFC 8259 JSON in UTF-8, or ValueError (no NaN / Infinity, no other encodings)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    return json.loads(text, parse_constant=refuse)


def expected_outcome(frame: Frame, sender: Role, ids: dict[Role, int]) -> Expected:
    """What contract §4 says happens when `sender` sends `frame`, its peer being online."""
    try:
        message = parse_strictly(frame)
    except ValueError:
        return Expected(reply=INVALID_JSON)
    if not isinstance(message, dict):
        return Expected(reply=INVALID_JSON)
    kind = message.get("type")
    if kind == "ping":
        return Expected(reply=PONG)
    if kind not in ("command", "event"):
        return Expected(reply=UNKNOWN_TYPE)
    # A client's commands go to its host, a host's events to its client; nothing else routes.
    routable = (kind == "command") == (sender is Role.CLIENT)
    if "to_device_id" in message:
        target = message["to_device_id"]
        if not (routable and type(target) is int and target == ids[sender.peer]):
            return Expected(reply={"error": "not paired", "target_device_id": target})
    elif not routable:
        return Expected(reply=NO_PAIRED_HOST if kind == "command" else NO_PAIRED_CLIENT)
    return Expected(relayed=message)


def canonical(value: Any) -> str:
    """Exact JSON identity: 1, 1.0 and true differ, and big integers keep every digit."""
    return json.dumps(value, sort_keys=True)


# --- driving the sockets ----------------------------------------------------------------------
class Sockets:
    """The host's and the client's synchronous sockets, reopened after a failed example so
    that hypothesis' shrinking starts from a clean slate."""

    def __init__(self, ws_url: str, pair: Pair) -> None:
        self._urls = {
            role: f"{ws_url}/ws/{role.value}/{device.id}?token={device.owner.token}"
            for role, device in ((Role.HOST, pair.host), (Role.CLIENT, pair.client))
        }
        self._open: dict[Role, ClientConnection] = {}
        self._stack = ExitStack()
        self.dirty = True

    def __getitem__(self, role: Role) -> ClientConnection:
        if self.dirty:
            self.close()
            for each, url in self._urls.items():
                ws = connect(url, open_timeout=RECV_TIMEOUT, close_timeout=2)
                self._open[each] = self._stack.enter_context(ws)
                assert recv_json(self._open[each])["type"] == "connected"
            self.dirty = False
        return self._open[role]

    def close(self) -> None:
        self._stack.close()
        self._open.clear()


def recv_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=RECV_TIMEOUT))


def check_frame(sockets: Sockets, sender: Role, frame: Frame, ids: dict[Role, int]) -> str:
    """Send `frame` and check what happens against the oracle; returns what happened."""
    expected = expected_outcome(frame, sender, ids)
    out, peer = sockets[sender], sockets[sender.peer]
    out.send(frame)
    out.send(PING)  # a barrier: the frame's reply, if any, comes before the pong
    replies = [recv_json(out) for _ in range(2 if expected.reply is not None else 1)]
    wanted = [expected.reply, PONG] if expected.reply is not None else [PONG]
    assert [canonical(r) for r in replies] == [canonical(w) for w in wanted], (
        f"{sender.value} sent {frame!r}: replies {replies}, expected {wanted}"
    )
    if expected.relayed is not None:
        relayed = recv_json(peer)
        assert isinstance(relayed, dict), relayed
        wanted_relay = dict(expected.relayed)
        if wanted_relay["type"] == "command" and wanted_relay.get("req_id") is None:
            req_id = relayed.get("req_id")
            assert isinstance(req_id, str) and SERVER_REQ_ID.fullmatch(req_id), relayed
            wanted_relay["req_id"] = req_id
        assert canonical(relayed) == canonical(wanted_relay), (
            f"{sender.value} sent {frame!r}: {sender.peer.value} got {relayed}"
        )
    peer.send(PING)  # and nothing else reached the peer
    assert recv_json(peer) == PONG, f"{sender.value} sent {frame!r}: peer got more"
    if expected.relayed is not None:
        return f"relayed {expected.relayed['type']}"
    assert expected.reply is not None
    return str(expected.reply.get("error", "pong"))


def fuzz_frames(ws_url: str, http_url: str, pair: Pair, spare_ids: list[int]) -> Counter[str]:
    """Blocking: fuzz both sockets, then check that they still relay; returns what happened."""
    ids = {Role.HOST: pair.host.id, Role.CLIENT: pair.client.id}
    sockets = Sockets(ws_url, pair)
    seen: Counter[str] = Counter()

    @hypothesis_settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @example(sender=Role.CLIENT, frame=BIG_TARGET)
    @example(sender=Role.CLIENT, frame=NULL_REQ_ID_BIG_NUMBER)
    @example(sender=Role.CLIENT, frame=NO_REQ_ID_AFTER_WHITESPACE)
    @example(sender=Role.HOST, frame=EVENT_NULL_REQ_ID)
    @example(sender=Role.CLIENT, frame='{"type":"event","event":"SIM_INFO"}')  # no paired client
    @given(sender=st.sampled_from(Role), frame=frames([*ids.values(), *spare_ids]))
    def frame_gets_its_contract_outcome(sender: Role, frame: Frame) -> None:
        try:
            seen[check_frame(sockets, sender, frame, ids)] += 1
        except BaseException:
            sockets.dirty = True
            raise

    try:
        frame_gets_its_contract_outcome()
        # The very sockets that took all of that still carry a command and its answer.
        host, client = sockets[Role.HOST], sockets[Role.CLIENT]
        command = {"type": "command", "cmd": "GET_SIMS", "req_id": "after-fuzz"}
        client.send(json.dumps(command))
        assert recv_json(host) == command
        answer = {"type": "event", "event": "SIM_INFO", "req_id": "after-fuzz", "sims": []}
        host.send(json.dumps(answer))
        assert recv_json(client) == answer
        token = pair.host.owner.token
        listed = httpx.get(
            f"{http_url}/devices", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert listed.status_code == 200, listed.text
        online = {device["id"] for device in listed.json() if device["is_online"]}
        assert online == set(ids.values()), listed.json()
    finally:
        sockets.close()
    return seen


async def test_fuzz_frames_get_contract_replies_or_are_relayed(
    server: LiveServer, http: httpx.AsyncClient, alice: Account, pair: Pair, settings: Settings
) -> None:
    bob = await make_account(http, "bob")
    spare_ids = [
        (await make_device(http, alice, "host", "spare-host")).id,
        (await make_device(http, alice, "client", "spare-client")).id,
        (await make_device(http, bob, "host")).id,
    ]
    seen = await asyncio.to_thread(fuzz_frames, server.ws_url, server.url, pair, spare_ids)

    # The run went through every branch of the oracle, not just the parser's refusals.
    outcomes = {
        "relayed command",
        "relayed event",
        "pong",
        "invalid JSON",
        "unknown message type",
        "not paired",
        "no paired host",
        "no paired client",
    }
    assert outcomes <= set(seen), seen

    # Only a frame over the limit closes a socket, with 1009; the relay goes on after it.
    async with socket(server, pair.host) as host_ws:
        async with socket(server, pair.client) as client_ws:
            await client_ws.send("x" * (settings.max_message_bytes + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await receive(client_ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with socket(server, pair.client) as client_ws:
            command = {"type": "command", "cmd": "GET_SIMS", "req_id": "after-1009"}
            await send(client_ws, command)
            assert await receive(host_ws) == command
