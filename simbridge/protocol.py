"""The WebSocket frames of contract §4: parsing what devices send and building what we send.

Frames are JSON objects; the wire strings here are frozen by the contract.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

COMMAND = "command"
EVENT = "event"
PING = "ping"

PONG = '{"type":"pong"}'
INVALID_JSON = '{"error":"invalid JSON"}'
UNKNOWN_TYPE = '{"error":"unknown message type"}'
NO_PAIRED_HOST = '{"error":"no paired host"}'
NO_PAIRED_CLIENT = '{"error":"no paired client"}'
INTERNAL_ERROR = '{"error":"internal error"}'
INVALID_OFFLINE_POLICY = '{"error":"invalid offline policy"}'

# Close codes
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_SLOW = 1008
CLOSE_REPLACED = 4000
CLOSE_REVOKED = 4001  # the credential that opened the socket was revoked or rotated
CLOSE_REMOVED = 4002  # the device was deleted


class InvalidFrame(Exception):
    """The frame is not JSON or not a JSON object."""


class TooDeep(Exception):
    """The JSON nests deeper than allowed."""


def encode(frame: dict[str, Any]) -> str:
    try:
        return orjson.dumps(frame).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, echoed from a sender
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def exact(raw: str | bytes, key: str, parsed: Any) -> Any:
    """Top-level `key` of the frame exactly as the sender wrote it.

    orjson reads integers beyond 64 bits as floats; where that can have happened (a float,
    or a container holding one), the standard parser reads the value again, exactly.
    """
    if isinstance(parsed, float | list | dict):
        try:
            return json.loads(raw).get(key)
        except (ValueError, RecursionError):  # nested past the standard parser's reach
            return parsed
    return parsed


def req_id_of(raw: str | bytes) -> Any:
    """The frame's `req_id` if it has one, else None (for replies to frames not acted on)."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return exact(raw, "req_id", frame.get("req_id")) if isinstance(frame, dict) else None


def with_new_req_id(raw: str | bytes, req_id: str) -> str:
    """The frame with `"req_id"` replaced, every other value kept exact."""
    frame = json.loads(raw)
    frame["req_id"] = req_id
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes, max_depth: int) -> dict[str, Any]:
    """Parse one frame; raises `InvalidFrame` unless it is a JSON object of at most
    `max_depth` levels (`TooDeep` otherwise)."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidFrame from exc
    if not isinstance(frame, dict):
        raise InvalidFrame
    if nests_deeper(raw, frame, max_depth):
        raise TooDeep
    return frame


def nests_deeper(raw: str | bytes, value: Any, max_depth: int) -> bool:
    """Whether `value` (parsed from `raw`) has more than `max_depth` levels of arrays/objects.

    Counting brackets in the text first settles nearly every frame at C speed; only a text
    with more brackets than the limit is walked.
    """
    opening = ("[", "{") if isinstance(raw, str) else (b"[", b"{")
    if raw.count(opening[0]) + raw.count(opening[1]) <= max_depth:  # type: ignore[arg-type]
        return False
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        node, depth = level.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def with_req_id(raw: str, req_id: str) -> str:
    """`raw` (a JSON object's text) with `"req_id"` added as its first member.

    Splicing text instead of re-encoding keeps every other byte as the sender wrote it,
    numbers beyond 64 bits included.
    """
    opening = raw.index("{") + 1
    return f'{raw[:opening]}"req_id":"{req_id}",{raw[opening:]}'


def rate_limited(req_id: Any) -> str:
    return encode({"error": "rate_limited", "req_id": req_id})


def too_deep(max_depth: int) -> str:
    return encode({"error": "too deeply nested", "max_depth": max_depth})


def connected(device_id: int) -> str:
    return encode({"type": "connected", "device_id": device_id})


def connected_since(device_id: int, seq: int, gap: bool) -> str:
    """The greeting of a `since` socket (contract §6): the device's latest seq, and `gap`
    when some frame it asked for is no longer kept."""
    greeting: dict[str, Any] = {"type": "connected", "device_id": device_id, "seq": seq}
    if gap:
        greeting["gap"] = True
    return encode(greeting)


def presence(device_id: int, online: bool) -> str:
    """A paired device came or went (contract §8: `since` sockets only; no seq, not kept)."""
    return encode({"type": "presence", "device_id": device_id, "online": online})


def with_seq(raw: str, seq: int) -> str:
    """`raw` (a JSON object's text) with `"seq": seq` as its first member, for a `since`
    socket. Spliced like `with_req_id`; a frame that may hold a `seq` of its own already (its
    sender's, perhaps spelled with escapes) is parsed and written again, with ours in its
    place."""
    if '"seq"' in raw or "\\u" in raw:
        frame = json.loads(raw)
        frame.pop("seq", None)
        return json.dumps({"seq": seq, **frame}, separators=(",", ":"), ensure_ascii=False)
    opening = raw.index("{") + 1
    return f'{raw[:opening]}"seq":{seq},{raw[opening:]}'


def target_offline(target_device_id: int, req_id: Any) -> str:
    return encode(
        {"error": "target_offline", "target_device_id": target_device_id, "req_id": req_id}
    )


def queued(req_id: Any, target_device_id: int) -> str:
    """The command waits for its offline host (contract §7)."""
    return encode({"type": "queued", "req_id": req_id, "target_device_id": target_device_id})


def not_paired(target_device_id: Any) -> str:
    return encode({"error": "not paired", "target_device_id": target_device_id})
