"""The fence around Sanic's internals: each one SimBridge relies on still exists, and a run
started Sanic's own way (`sanic ... --factory`) gets SimBridge's sockets too."""

from __future__ import annotations

import inspect

import httpx
import pytest
from sanic import Sanic
from sanic.server.websockets.impl import WebsocketImplProtocol
from tortoise import Tortoise
from websockets.asyncio.client import connect
from websockets.server import ServerProtocol

from simbridge.config import Settings
from simbridge.web.sanic_compat import INTERNALS
from tests.helpers import LiveServer, make_account, make_device, pair_devices, receive, send
from tests.processes import Servers

TORTOISE_PRIVATE_PARAMETER = "_enable_global_fallback"  # passed by simbridge.db.start_orm
SANIC_FACTORY_RUN = (
    *("-m", "sanic", "simbridge.app:create_app", "--factory", "--single-process"),
    *("--host", "127.0.0.1", "--port", "{port}"),
)


def missing_internals() -> list[str]:
    """The fence's internals that the installed Sanic does not have.

    Each must be defined by Sanic itself (a hook inherited from asyncio alone would no longer
    be called the way we rely on); those set on the instance in `__init__` are looked for on a
    socket built the way Sanic builds one.
    """
    socket = WebsocketImplProtocol(ServerProtocol())
    return [
        _qualified(owner, name)
        for owner, name in INTERNALS
        if not _sanic_classes_defining(owner, name)
        and not (owner is WebsocketImplProtocol and hasattr(socket, name))
    ]


def _qualified(owner: type, name: str) -> str:
    return f"{owner.__module__}.{owner.__qualname__}.{name}"


def test_every_internal_the_fence_names_exists() -> None:
    assert missing_internals() == []


def test_tortoise_still_takes_its_private_parameter() -> None:
    assert TORTOISE_PRIVATE_PARAMETER in inspect.signature(Tortoise.init).parameters


@pytest.mark.parametrize(("owner", "name"), list(INTERNALS))
def test_a_removed_internal_is_reported(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    """The check can fail: with any one internal gone from Sanic, it names that one."""
    defined_by = _sanic_classes_defining(owner, name)
    if defined_by:
        for cls in defined_by:
            monkeypatch.delattr(cls, name)
    else:  # set on each socket by Sanic's __init__
        original_init = WebsocketImplProtocol.__init__

        def init_without(self: WebsocketImplProtocol, *args: object, **kwargs: object) -> None:
            original_init(self, *args, **kwargs)  # type: ignore[arg-type]
            delattr(self, name)

        monkeypatch.setattr(WebsocketImplProtocol, "__init__", init_without)
    assert missing_internals() == [_qualified(owner, name)]


def _sanic_classes_defining(owner: type, name: str) -> list[type]:
    """`owner` and those of its bases from Sanic's packages that define `name` (a hook such as
    `connection_lost` is defined at several levels)."""
    return [
        cls
        for cls in owner.__mro__
        if cls.__module__.startswith(("sanic.", "sanic_routing.")) and name in vars(cls)
    ]


async def test_sanic_factory_run_relays(servers: Servers) -> None:
    """`sanic simbridge.app:create_app --factory` serves SimBridge's sockets: a command from a
    client reaches the host (the first delivery raised AttributeError before)."""
    server = await servers.start(SANIC_FACTORY_RUN)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        owner = await make_account(http, "factory")
        host = await make_device(http, owner, "host")
        client = await make_device(http, owner, "client")
        await pair_devices(http, owner, host, client)
    async with (
        connect(f"{server.ws_url}/ws/host/{host.id}?token={owner.token}") as host_ws,
        connect(f"{server.ws_url}/ws/client/{client.id}?token={owner.token}") as client_ws,
    ):
        assert (await receive(host_ws))["type"] == "connected"
        assert (await receive(client_ws))["type"] == "connected"
        await send(client_ws, {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"})
        assert await receive(host_ws) == {"type": "command", "cmd": "GET_SIMS", "req_id": "r1"}


async def test_a_server_start_compiles_the_signal_router_once_with_sanic_exts_routes(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """`batch_signal_finalization`: sanic-ext's HEAD and OPTIONS routes are added at start
    without a signal router compiled per route (which made a start take most of a second),
    and the signals work afterwards (a request runs through them)."""
    compiled: list[Sanic] = []
    signalize = Sanic.signalize

    def counting(app: Sanic, allow_fail_builtin: bool = True) -> None:
        compiled.append(app)
        signalize(app, allow_fail_builtin)

    monkeypatch.setattr(Sanic, "signalize", counting)
    async with LiveServer.running(settings) as server:
        methods = {method for route in server.app.router.routes for method in route.methods}
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.head("/health")).status_code == 200
            assert (await http.get("/health")).status_code == 200
    assert {"HEAD", "OPTIONS"} <= methods
    assert 1 <= len(compiled) <= 2, f"the signal router was compiled {len(compiled)} times"
