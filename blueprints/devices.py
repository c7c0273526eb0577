"""Devices: register a host or client, list your own, rotate a device token, delete one."""

from __future__ import annotations

from pydantic import RootModel
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.models import DeviceType
from simbridge.schemas import Deleted, DeviceCreate, DeviceCreated, DeviceOut, DeviceTokenOut
from simbridge.services import devices, revocation
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context, runtime_of
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body

bp = Blueprint("devices", url_prefix="/devices")


class DeviceList(RootModel[list[DeviceOut]]):
    pass


@bp.post("")
@documented(
    "create_device", tag="devices", body=DeviceCreate, ok=DeviceCreated, errors=(400, 401, 409)
)
@authenticated
async def add_device(request: Request) -> HTTPResponse:
    """Register a device (a host holds the SIM cards; a client commands it).

    The reply's `device_token` opens this device's WebSocket; it is shown only this once.
    """
    new = parse_body(request, DeviceCreate)
    limit = app_context(request).settings.max_devices_per_user
    created = await devices.create_device(request.ctx.user, new.name, DeviceType(new.type), limit)
    return json(created)


@bp.get("")
@documented("list_devices", tag="devices", ok=DeviceList, errors=(401,))
@authenticated
async def get_devices(request: Request) -> HTTPResponse:
    """List the caller's devices, with whether each has a live WebSocket now."""
    runtime = runtime_of(request)
    return json(await devices.list_devices(request.ctx.user, runtime.broker, runtime.last_seen))


@bp.post("/<device_id:int>/token")
@documented("rotate_device_token", tag="devices", ok=DeviceTokenOut, errors=(401, 404))
@authenticated
async def rotate_token(request: Request, device_id: int) -> HTTPResponse:
    """Issue a new device token; the old one stops working and its sockets close."""
    broker = runtime_of(request).broker
    token = await revocation.rotate_device_token(request.ctx.user, device_id, broker)
    return json({"device_token": token})


@bp.delete("/<device_id:int>")
@documented("delete_device", tag="devices", ok=Deleted, errors=(401, 404))
@authenticated
async def delete_device(request: Request, device_id: int) -> HTTPResponse:
    """Delete a device with its pairings; its socket closes and nothing more is routed to it."""
    runtime = runtime_of(request)
    await revocation.remove_device(
        request.ctx.user,
        device_id,
        runtime.directory,
        runtime.broker,
        runtime.commands,
        runtime.inboxes,
    )
    return json({"status": "deleted"})
