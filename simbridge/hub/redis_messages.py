"""What `RedisBroker` writes into Redis besides frames: control messages as JSON, and request
ids as hash fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from simbridge.hub.control import CloseSessions, Control, ForgetPairings, ForgetUser
from simbridge.hub.open_requests import MAX_REQ_ID_LENGTH

_INT_KEY_LIMIT = 10**MAX_REQ_ID_LENGTH  # integer ids with more digits are not correlated
_CONTROLS: dict[str, Callable[..., Control]] = {
    kind.__name__: kind for kind in (CloseSessions, ForgetPairings, ForgetUser)
}


def encode_control(node_id: str, control: Control) -> str:
    """Plain JSON of the dataclass, with the sending node (which skips its own)."""
    return json.dumps({"node": node_id, "kind": type(control).__name__, "fields": asdict(control)})


def decode_control(text: str) -> tuple[str, Control]:
    message = json.loads(text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in message["fields"].items()}
    return message["node"], _CONTROLS[message["kind"]](**fields)


def request_field(req_id: Any) -> str | None:
    """`req_id` as a hash field (a string never collides with a number), or None when it cannot
    be a key (as in `OpenRequests`; integers of more than 128 digits cannot either)."""
    if isinstance(req_id, str):
        return "s" + req_id if len(req_id) <= MAX_REQ_ID_LENGTH else None
    if isinstance(req_id, int) and not isinstance(req_id, bool) and -_INT_KEY_LIMIT < req_id:
        return "i" + str(req_id) if req_id < _INT_KEY_LIMIT else None
    return None
