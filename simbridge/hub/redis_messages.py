"""What `RedisBroker` publishes besides plain frames: control messages as JSON, and commands
with their asker."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from simbridge.hub.control import (
    CloseSessions,
    CommandsQueued,
    Control,
    ForgetPairings,
    ForgetUser,
    WaitedAnswer,
    WebhooksChanged,
)
from simbridge.hub.open_requests import MAX_REQ_ID_LENGTH, Asked

_INT_KEY_LIMIT = 10**MAX_REQ_ID_LENGTH  # integer ids with more digits are not correlated
_CONTROLS: dict[str, Callable[..., Control]] = {
    kind.__name__: kind
    for kind in (
        CloseSessions,
        ForgetPairings,
        ForgetUser,
        CommandsQueued,
        WaitedAnswer,
        WebhooksChanged,
    )
}


def encode_control(node_id: str, control: Control) -> str:
    """Plain JSON of the dataclass, with the sending node (which skips its own)."""
    return json.dumps({"node": node_id, "kind": type(control).__name__, "fields": asdict(control)})


def decode_control(text: str) -> tuple[str, Control]:
    message = json.loads(text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in message["fields"].items()}
    return message["node"], _CONTROLS[message["kind"]](**fields)


def encode_command(frame: str, asked: Asked) -> str:
    """`<client>:<length>:<req_id><frame>`; the id typed (`s` string, `i` integer), so that the
    host's answers, whose ids are compared by value, find it. Ids that cannot be remembered
    (see `OpenRequests`) travel empty."""
    req_id = _typed(asked.req_id)
    return f"{asked.client_id}:{len(req_id)}:{req_id}{frame}"


def decode_command(payload: str) -> tuple[Asked | None, str]:
    """The asker (None if its id was not rememberable) and the frame of `encode_command`."""
    client, _, rest = payload.partition(":")
    length, _, rest = rest.partition(":")
    req_id, frame = rest[: int(length)], rest[int(length) :]
    if not req_id:
        return None, frame
    value: Any = req_id[1:] if req_id[0] == "s" else int(req_id[1:])
    return Asked(value, int(client)), frame


def _typed(req_id: Any) -> str:
    if isinstance(req_id, str):
        return "s" + req_id if len(req_id) <= MAX_REQ_ID_LENGTH else ""
    if isinstance(req_id, int) and not isinstance(req_id, bool) and -_INT_KEY_LIMIT < req_id:
        return "i" + str(req_id) if req_id < _INT_KEY_LIMIT else ""
    return ""
