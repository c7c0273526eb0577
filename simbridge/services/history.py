"""Reading the message log of one device (contract §3 `GET /history`)."""

from __future__ import annotations

from typing import Any

import orjson

from simbridge.models import MessageLog, User
from simbridge.services.devices import owned_device
from simbridge.services.message_log import MessageLogWriter


async def list_history(
    user: User, device_id: int, limit: int, writer: MessageLogWriter
) -> list[dict[str, Any]]:
    """Newest first, messages sent or received by the caller's device.

    Two index range scans (sent, received) merged here, instead of one `OR` query the
    database could not serve from an index at millions of rows. `payload` is the stored
    JSON text embedded as is, so the reply must be encoded with orjson (the app's `dumps`).
    """
    await owned_device(user, device_id, None)
    await writer.flush()  # what was relayed before this request is in the answer
    sent = MessageLog.filter(from_device_id=device_id).order_by("-id").limit(limit)
    received = MessageLog.filter(to_device_id=device_id).order_by("-id").limit(limit)
    rows = {row.id: row for row in [*await sent, *await received]}
    newest = sorted(rows.values(), key=lambda row: row.id, reverse=True)[:limit]
    return [
        {
            "id": row.id,
            "from_device_id": row.from_device_id,
            "to_device_id": row.to_device_id,
            "msg_type": row.msg_type,
            "payload": orjson.Fragment(row.payload),  # the stored text, byte for byte
            "created_at": row.created_at,
        }
        for row in newest
    ]
