"""The REST side of a simulated device: log in, find or create the device, take a device token
for its socket, pair a client with a host. Every failure is a `SimulatorError` with one line a
person can act on; the password and tokens never appear in one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

REST_TIMEOUT_SECONDS = 10.0


class SimulatorError(Exception):
    """A reason to stop, in one line (bad URL, wrong password, unknown device, ...)."""


@dataclass(frozen=True)
class Login:
    """Where the server is and whose account the simulated device belongs to."""

    url: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise SimulatorError(f"the server URL must start with http:// or https://: {self.url}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @property
    def ws_url(self) -> str:
        """The same server's WebSocket root: ws:// for http://, wss:// for https://."""
        return "ws" + self.base_url.removeprefix("http")


@dataclass(frozen=True)
class DeviceAccess:
    """A device of the account, and the device token that opens its socket (only its own)."""

    device_id: int
    kind: str
    name: str
    token: str = field(repr=False)


class Account:
    """A logged-in account, over one HTTP client."""

    def __init__(self, login: Login, http: httpx.AsyncClient, token: str) -> None:
        self.login = login
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    @asynccontextmanager
    async def open(cls, login: Login) -> AsyncIterator[Account]:
        """Log in as `login.username`; the HTTP client closes afterwards."""
        async with httpx.AsyncClient(base_url=login.base_url, timeout=REST_TIMEOUT_SECONDS) as http:
            body = {"username": login.username, "password": login.password}
            reply = await _request(http, "POST", "/auth/login", json=body)
            if reply.status_code == 401:
                raise SimulatorError(f"wrong username or password for {login.base_url}")
            yield cls(login, http, _expect(reply, "POST /auth/login")["token"])

    async def device(self, kind: str, device_id: int | None, name: str | None) -> DeviceAccess:
        """The device `device_id` (it must be of `kind`), or else the `kind` device called
        `name` (the oldest of that name), created when there is none; with a new device token
        either way (the device's previous token stops working)."""
        devices = await self._call("GET", "/devices")
        if device_id is not None:
            found = [d for d in devices if d["id"] == device_id]
            if not found:
                raise SimulatorError(f"device {device_id} is not a device of {self._who}")
            if found[0]["type"] != kind:
                raise SimulatorError(f"device {device_id} is a {found[0]['type']}, not a {kind}")
            return await self._take_over(found[0])
        assert name is not None, "a device id or a name"
        named = sorted(
            (d for d in devices if d["name"] == name and d["type"] == kind), key=lambda d: d["id"]
        )
        if named:
            return await self._take_over(named[0])
        created = await self._call("POST", "/devices", json={"name": name, "type": kind})
        return DeviceAccess(created["id"], kind, created["name"], created["device_token"])

    async def pair(self, host_id: int, client_id: int) -> int:
        """Pair the client with the host (both the account's); the pairing's id. A couple
        already paired keeps its pairing."""
        for pairing in await self._call("GET", "/pairings"):
            if (pairing["host_device_id"], pairing["client_device_id"]) == (host_id, client_id):
                return int(pairing["id"])
        code = await self._call("POST", "/pair", params={"host_device_id": host_id})
        confirm = {"code": code["code"], "client_device_id": client_id}
        return int((await self._call("POST", "/pair/confirm", json=confirm))["pairing_id"])

    @property
    def _who(self) -> str:
        return f"{self.login.username} on {self.login.base_url}"

    async def _take_over(self, device: dict[str, Any]) -> DeviceAccess:
        issued = await self._call("POST", f"/devices/{device['id']}/token")
        return DeviceAccess(device["id"], device["type"], device["name"], issued["device_token"])

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await _request(self._http, method, path, headers=self._headers, **kwargs)
        return _expect(reply, f"{method} {path}")


async def _request(
    http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise SimulatorError(f"cannot reach {http.base_url}: {exc or type(exc).__name__}") from exc


def _expect(reply: httpx.Response, what: str) -> Any:
    """The JSON body of a 200 reply; any other reply is a `SimulatorError` with its detail."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if reply.status_code == 200 and body is not None:
        return body
    detail = body.get("detail") if isinstance(body, dict) else None
    if detail is None:
        detail = "not a SimBridge server?" if body is None else "unexpected reply"
    raise SimulatorError(f"{what} answered {reply.status_code}: {detail}")
