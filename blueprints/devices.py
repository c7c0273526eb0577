"""Devices: register a host or client, list your own."""

from __future__ import annotations

from pydantic import RootModel
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from simbridge.models import DeviceType
from simbridge.schemas import DeviceCreate, DeviceCreated, DeviceOut
from simbridge.services.devices import create_device, list_devices
from simbridge.web.auth import authenticated
from simbridge.web.context import app_context
from simbridge.web.docs import documented
from simbridge.web.parsing import parse_body

bp = Blueprint("devices", url_prefix="/devices")


class DeviceList(RootModel[list[DeviceOut]]):
    pass


@bp.post("")
@documented(tag="devices", body=DeviceCreate, ok=DeviceCreated, errors=(400, 401))
@authenticated
async def add_device(request: Request) -> HTTPResponse:
    """Register a device (a host holds the SIM cards; a client commands it)."""
    new = parse_body(request, DeviceCreate)
    return json(await create_device(request.ctx.user, new.name, DeviceType(new.type)))


@bp.get("")
@documented(tag="devices", ok=DeviceList, errors=(401,))
@authenticated
async def get_devices(request: Request) -> HTTPResponse:
    """List the caller's devices, with whether each has a live WebSocket now."""
    broker = app_context(request).relay.broker
    return json(await list_devices(request.ctx.user, broker))
