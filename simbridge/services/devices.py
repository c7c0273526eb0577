"""Devices, their credentials, and the one ownership rule every device id passes through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simbridge.errors import Forbidden, InvalidCredentials, LimitReached, NotFound
from simbridge.hub import Broker
from simbridge.models import Device, DeviceType, User, is_stored_id
from simbridge.security import device_token_digest, device_token_matches, new_device_token
from simbridge.services.device_records import DeviceRecord, DeviceRecords
from simbridge.services.last_seen import LastSeenWriter


async def owned_device(user: User, device_id: int, device_type: DeviceType | None) -> Device:
    """The caller's device `device_id`, of `device_type` if given.

    Someone else's device is "not found", exactly like a missing one (no existence oracle);
    the caller's own device of the other type is 403.
    """
    device = None
    if is_stored_id(device_id):
        device = await Device.get_or_none(id=device_id, user_id=user.id)
    if device is None:
        raise NotFound("Device not found")
    _check_type(device_id, device.device_type, device_type)
    return device


async def owned_record(
    records: DeviceRecords, user_id: int, device_id: int, device_type: DeviceType
) -> DeviceRecord:
    """`owned_device`'s rule for a socket's handshake, from the remembered records."""
    record = await records.get(device_id)
    if record is None or record.user_id != user_id:
        raise NotFound("Device not found")
    _check_type(device_id, record.device_type, device_type)
    return record


async def record_for_token(
    records: DeviceRecords, token: str, device_id: int, device_type: DeviceType
) -> DeviceRecord:
    """The device a device token opens: its own socket only, on the path of its type."""
    record = await records.get(device_id)
    if record is None or not device_token_matches(token, record.token_digest):
        raise InvalidCredentials("Invalid device token")
    _check_type(device_id, record.device_type, device_type)
    return record


def _check_type(device_id: int, actual: DeviceType, wanted: DeviceType | None) -> None:
    if wanted is not None and actual != wanted:
        raise Forbidden(f"Device {device_id} is not a {wanted.value} device")


async def create_device(
    user: User, name: str, device_type: DeviceType, max_devices: int
) -> dict[str, Any]:
    """Register a device; the reply carries its device token, which is never shown again."""
    if await Device.filter(user_id=user.id).count() >= max_devices:
        raise LimitReached(f"An account may register at most {max_devices} devices")
    token = new_device_token()
    device = await Device.create(
        user=user, name=name, device_type=device_type, device_token=device_token_digest(token)
    )
    return {
        "id": device.id,
        "name": device.name,
        "type": device.device_type.value,
        "is_online": False,
        "device_token": token,
    }


async def rotate_device_token(user: User, device_id: int) -> str:
    """A new device token for the caller's device; the old one stops working now."""
    device = await owned_device(user, device_id, None)
    token = new_device_token()
    device.device_token = device_token_digest(token)
    await device.save(update_fields=["device_token"])
    return token


async def list_devices(
    user: User, broker: Broker, last_seen: LastSeenWriter
) -> list[dict[str, Any]]:
    """The user's devices. `last_seen` is written behind: this process's own times not yet
    written are shown at once; those of another process once it writes them (within
    `last_seen_flush_seconds`)."""
    devices = await Device.filter(user_id=user.id).order_by("id")
    online = await broker.online(device.id for device in devices)
    return [
        {
            "id": device.id,
            "name": device.name,
            "type": device.device_type.value,
            "is_online": device.id in online,
            "last_seen": _latest(last_seen.seen(device.id), device.last_seen),
        }
        for device in devices
    ]


def _latest(noted: datetime | None, stored: datetime | None) -> datetime | None:
    """The later of two times, either of which may be missing."""
    if noted is None or stored is None:
        return noted or stored
    return max(noted, stored)
