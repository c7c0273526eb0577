"""The routing rules of contract §4, with fake connections and an in-memory database: who
gets a command or an event, and what the sender hears, in milliseconds per rule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from tortoise import Tortoise

from simbridge import protocol
from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.hub import Hub, MemoryBroker, Session
from simbridge.hub.control import Control
from simbridge.hub.open_requests import OpenRequests
from simbridge.models import Device, DeviceType, MessageLog, Pairing, User
from simbridge.services.commands import Commands
from simbridge.services.directory import PairingDirectory
from simbridge.services.last_seen import LastSeenWriter
from simbridge.services.log_store import OrmLogStore
from simbridge.services.message_log import MessageLogWriter
from simbridge.services.relay import Relay
from tests.fakes import FakeConnection

IN_MEMORY = {
    "connections": {"default": "sqlite://:memory:"},
    "apps": {"models": {"models": ["simbridge.models"], "default_connection": "default"}},
    "use_tz": True,
}


@dataclass
class World:
    relay: Relay
    writer: MessageLogWriter
    user: User

    async def device(self, kind: DeviceType) -> Device:
        return await Device.create(user=self.user, name=kind.value, device_type=kind)

    async def online(self, device: Device) -> tuple[Session, FakeConnection]:
        conn = FakeConnection()
        session = self.relay.open_session(
            conn, device.id, device.device_type, self.user.id, 0, None
        )
        await self.relay.connect(session)
        conn.sent.clear()  # the greeting
        return session, conn


@pytest.fixture
async def world() -> AsyncIterator[World]:
    await Tortoise.init(config=IN_MEMORY, _enable_global_fallback=True)
    await Tortoise.generate_schemas()
    clock = ManualClock()
    settings = Settings(jwt_secret="x" * 32, clock=clock, ws_message_burst=5)
    writer = MessageLogWriter(
        OrmLogStore(), clock, batch_size=100, flush_seconds=0.01, queue_size=100
    )
    writer.start()
    hub = Hub(
        settings.send_timeout_seconds,
        settings.max_sockets_per_user,
        OpenRequests(clock, settings.request_correlation_seconds),
    )
    directory = PairingDirectory()
    broker = MemoryBroker()

    async def no_pairing_changes_here(control: Control) -> None:
        raise AssertionError(f"unexpected control message {control}")

    await broker.start(hub, no_pairing_changes_here)
    last_seen = LastSeenWriter(clock, settings.last_seen_flush_seconds)
    commands = Commands(writer, clock)
    await commands.load()
    relay = Relay(hub, broker, directory, writer, settings, last_seen, None, commands)
    try:
        yield World(relay, writer, await User.create(username="alice", password_hash="-"))
    finally:
        await writer.stop()
        await Tortoise.close_connections()


async def paired(world: World, clients: int = 1) -> tuple[Device, list[Device]]:
    host = await world.device(DeviceType.HOST)
    others = [await world.device(DeviceType.CLIENT) for _ in range(clients)]
    for client in others:
        await Pairing.create(host_device=host, client_device=client)
    return host, others


async def handle(session: Session, relay: Relay, frame: dict[str, Any] | str) -> Any:
    """The sender's reply to `frame`, parsed (None when it gets none)."""
    reply = await relay.handle(session, frame if isinstance(frame, str) else json.dumps(frame))
    return None if reply is None else json.loads(reply)


async def test_a_command_goes_to_the_paired_host_as_sent(world: World) -> None:
    host, (client,) = await paired(world)
    _, host_conn = await world.online(host)
    client_session, _ = await world.online(client)
    command = {"type": "command", "cmd": "SEND_SMS", "to": "+1", "req_id": "r1"}
    assert await handle(client_session, world.relay, command) is None
    assert host_conn.frames() == [command]


async def test_a_command_without_req_id_gets_one(world: World) -> None:
    host, (client,) = await paired(world)
    _, host_conn = await world.online(host)
    client_session, _ = await world.online(client)
    await handle(client_session, world.relay, {"type": "command", "cmd": "GET_SIMS"})
    (delivered,) = host_conn.frames()
    assert isinstance(delivered["req_id"], str) and len(delivered["req_id"]) == 32


async def test_a_command_to_an_unpaired_host_is_refused(world: World) -> None:
    _, (client,) = await paired(world)
    stranger = await world.device(DeviceType.HOST)
    _, stranger_conn = await world.online(stranger)
    client_session, _ = await world.online(client)
    frame = {"type": "command", "cmd": "GET_SIMS", "to_device_id": stranger.id}
    reply = await handle(client_session, world.relay, frame)
    assert reply == {"error": "not paired", "target_device_id": stranger.id}
    assert stranger_conn.sent == []


async def test_a_command_with_no_paired_host_is_refused(world: World) -> None:
    client = await world.device(DeviceType.CLIENT)
    session, _ = await world.online(client)
    reply = await handle(session, world.relay, {"type": "command", "cmd": "GET_SIMS"})
    assert reply == {"error": "no paired host"}


async def test_a_command_to_an_offline_host_is_target_offline(world: World) -> None:
    host, (client,) = await paired(world)
    session, _ = await world.online(client)
    frame = {"type": "command", "cmd": "GET_SIMS", "req_id": "r9"}
    reply = await handle(session, world.relay, frame)
    assert reply == {"error": "target_offline", "target_device_id": host.id, "req_id": "r9"}


async def test_an_answer_goes_to_the_client_that_asked_only(world: World) -> None:
    host, (asker, other) = await paired(world, clients=2)
    host_session, _ = await world.online(host)
    asker_session, asker_conn = await world.online(asker)
    _, other_conn = await world.online(other)
    await handle(asker_session, world.relay, {"type": "command", "cmd": "GET_SIMS", "req_id": "q"})
    answer = {"type": "event", "event": "SIM_INFO", "sims": [], "req_id": "q"}
    assert await handle(host_session, world.relay, answer) is None
    assert (asker_conn.frames(), other_conn.sent) == ([answer], [])


async def test_an_unsolicited_event_fans_out_to_every_online_client(world: World) -> None:
    host, (first, second, offline) = await paired(world, clients=3)
    host_session, _ = await world.online(host)
    _, first_conn = await world.online(first)
    _, second_conn = await world.online(second)
    event = {"type": "event", "event": "INCOMING_SMS", "from": "+1", "body": "hi"}
    assert await handle(host_session, world.relay, event) is None
    assert first_conn.frames() == second_conn.frames() == [event]


async def test_an_event_with_every_client_offline_is_target_offline(world: World) -> None:
    host, (client,) = await paired(world)
    host_session, _ = await world.online(host)
    reply = await handle(host_session, world.relay, {"type": "event", "event": "INCOMING_SMS"})
    assert reply == {"error": "target_offline", "target_device_id": client.id, "req_id": None}


async def test_an_event_with_no_paired_client_is_refused(world: World) -> None:
    host = await world.device(DeviceType.HOST)
    session, _ = await world.online(host)
    reply = await handle(session, world.relay, {"type": "event", "event": "INCOMING_SMS"})
    assert reply == {"error": "no paired client"}


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        ('{"type":"ping"}', protocol.PONG),
        ("not json", protocol.INVALID_JSON),
        ("[1]", protocol.INVALID_JSON),
        ('{"type":"dance"}', protocol.UNKNOWN_TYPE),
    ],
)
async def test_frames_that_route_nowhere_are_answered(world: World, frame: str, reply: str) -> None:
    session, _ = await world.online(await world.device(DeviceType.CLIENT))
    assert await world.relay.handle(session, frame) == reply


async def test_frames_past_the_burst_are_rate_limited(world: World) -> None:
    session, _ = await world.online(await world.device(DeviceType.CLIENT))
    replies = [await handle(session, world.relay, {"type": "ping", "req_id": n}) for n in range(6)]
    assert replies[:5] == [{"type": "pong"}] * 5
    assert replies[5] == {"error": "rate_limited", "req_id": 5}


async def test_relayed_frames_are_logged_and_refused_ones_are_not(world: World) -> None:
    host, (client,) = await paired(world)
    await world.online(host)
    session, _ = await world.online(client)
    await handle(session, world.relay, {"type": "command", "cmd": "GET_SIMS", "req_id": "a"})
    await handle(session, world.relay, {"type": "command", "cmd": "X", "to_device_id": 999})
    await world.writer.flush()
    logged = await MessageLog.all().values_list("from_device_id", "to_device_id", "msg_type")
    assert logged == [(client.id, host.id, "command")]
