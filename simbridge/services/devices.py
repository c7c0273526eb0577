"""Devices, their credentials, and the one ownership rule every device id passes through."""

from __future__ import annotations

from typing import Any

from simbridge.clock import Clock
from simbridge.errors import Forbidden, InvalidCredentials, LimitReached, NotFound
from simbridge.hub import Broker
from simbridge.models import Device, DeviceType, User, is_stored_id
from simbridge.security import device_token_digest, device_token_matches, new_device_token


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
    if device_type is not None and device.device_type != device_type:
        raise Forbidden(f"Device {device_id} is not a {device_type.value} device")
    return device


async def device_for_token(token: str, device_id: int, device_type: DeviceType) -> Device:
    """The device a device token opens: its own socket only, on the path of its type."""
    device = await Device.get_or_none(id=device_id) if is_stored_id(device_id) else None
    if device is None or not device_token_matches(token, device.device_token):
        raise InvalidCredentials("Invalid device token")
    if device.device_type != device_type:
        raise Forbidden(f"Device {device_id} is not a {device_type.value} device")
    return device


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
