"""The WebSocket frames of contract §4: parsing what devices send and building what we send.

Frames are JSON objects; the wire strings here are frozen by the contract.
"""

from __future__ import annotations

from typing import Any

import orjson

COMMAND = "command"
EVENT = "event"
PING = "ping"
RELAYED_TYPES = (COMMAND, EVENT)

PONG = '{"type":"pong"}'
INVALID_JSON = '{"error":"invalid JSON"}'
UNKNOWN_TYPE = '{"error":"unknown message type"}'
NO_PAIRED_HOST = '{"error":"no paired host"}'
NO_PAIRED_CLIENT = '{"error":"no paired client"}'

# Close codes
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_SLOW = 1008
CLOSE_REPLACED = 4000


class InvalidFrame(Exception):
    """The frame is not JSON or not a JSON object."""


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def decode(raw: str | bytes) -> dict[str, Any]:
    """Parse one frame; raises `InvalidFrame` unless it is a JSON object."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidFrame from exc
    if not isinstance(frame, dict):
        raise InvalidFrame
    return frame


def with_req_id(raw: str, req_id: str) -> str:
    """`raw` (a JSON object's text) with `"req_id"` added as its first member.

    Splicing text instead of re-encoding keeps every other byte as the sender wrote it,
    numbers beyond 64 bits included.
    """
    opening = raw.index("{") + 1
    return f'{raw[:opening]}"req_id":"{req_id}",{raw[opening:]}'


def connected(device_id: int) -> str:
    return encode({"type": "connected", "device_id": device_id})


def target_offline(target_device_id: int, req_id: Any) -> str:
    return encode(
        {"error": "target_offline", "target_device_id": target_device_id, "req_id": req_id}
    )


def not_paired(target_device_id: Any) -> str:
    return encode({"error": "not paired", "target_device_id": target_device_id})
