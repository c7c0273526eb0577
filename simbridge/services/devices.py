"""Devices and the one ownership rule every device id passes through."""

from __future__ import annotations

from typing import Any

from simbridge.clock import Clock
from simbridge.errors import Forbidden, NotFound
from simbridge.hub import Broker
from simbridge.models import MAX_ID, Device, DeviceType, User


async def owned_device(user: User, device_id: int, device_type: DeviceType | None) -> Device:
    """The caller's device `device_id`, of `device_type` if given.

    Someone else's device is "not found", exactly like a missing one (no existence oracle);
    the caller's own device of the other type is 403.
    """
    in_range = 1 <= device_id <= MAX_ID
    device = await Device.get_or_none(id=device_id, user_id=user.id) if in_range else None
    if device is None:
        raise NotFound("Device not found")
    if device_type is not None and device.device_type != device_type:
        raise Forbidden(f"Device {device_id} is not a {device_type.value} device")
    return device


async def create_device(user: User, name: str, device_type: DeviceType) -> dict[str, Any]:
    device = await Device.create(user=user, name=name, device_type=device_type)
    return {
        "id": device.id,
        "name": device.name,
        "type": device.device_type.value,
        "is_online": False,
    }


async def list_devices(user: User, broker: Broker) -> list[dict[str, Any]]:
    devices = await Device.filter(user_id=user.id).order_by("id")
    online = await broker.online(device.id for device in devices)
    return [
        {
            "id": device.id,
            "name": device.name,
            "type": device.device_type.value,
            "is_online": device.id in online,
            "last_seen": device.last_seen,
        }
        for device in devices
    ]


async def mark_seen(device_id: int, clock: Clock) -> None:
    await Device.filter(id=device_id).update(last_seen=clock())
