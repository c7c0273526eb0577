"""What every `Broker` promises, run against each implementation with fake connections.

Each entry of `BROKERS` makes the brokers of nodes sharing one backend; the cases that need
two nodes of the Redis broker are in test_redis_broker.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from simbridge.clock import ManualClock
from simbridge.hub import Broker, Hub, MemoryBroker
from simbridge.hub.control import CloseSessions, Control, ForgetPairings, ForgetUser
from simbridge.hub.open_requests import PER_HOST
from tests.fakes import FakeConnection
from tests.redis_server import redis_backend
from tests.simbridge.hub.test_local import new_session

REQUEST_TTL_SECONDS = 600.0
MAX_SOCKETS_PER_USER = 3

BrokerFactory = Callable[[ManualClock], Broker]
"""Makes the broker of one node; the nodes of one factory share a backend."""


@asynccontextmanager
async def memory_backend() -> AsyncIterator[BrokerFactory]:
    yield lambda clock: MemoryBroker(clock, REQUEST_TTL_SECONDS)


BROKERS: dict[str, Callable[[], AbstractAsyncContextManager[BrokerFactory]]] = {
    "memory": memory_backend,
    "redis": lambda: redis_backend(
        request_ttl_seconds=REQUEST_TTL_SECONDS, max_sockets_per_user=MAX_SOCKETS_PER_USER
    ),
}


@dataclass
class Node:
    """One process: its hub, its broker and the control messages that reached it."""

    hub: Hub
    broker: Broker
    clock: ManualClock
    controls: list[Control] = field(default_factory=list)

    async def on_control(self, control: Control) -> None:
        self.controls.append(control)

    async def connect(
        self, device_id: int, user_id: int = 1, conn: FakeConnection | None = None
    ) -> FakeConnection:
        session = new_session(device_id, user_id, conn)
        self.hub.open(session)
        await self.hub.attach(session)
        await self.broker.claim(device_id)
        assert isinstance(session.conn, FakeConnection)
        return session.conn

    async def disconnect(self, device_id: int) -> None:
        session = self.hub.session_of(device_id)
        assert session is not None
        assert self.hub.detach(session)
        await self.broker.release(device_id)
        self.hub.close(session)


@pytest.fixture(params=sorted(BROKERS))
async def node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    async with BROKERS[request.param]() as make_broker:
        clock = ManualClock()
        hub = Hub(send_timeout=0.05, max_sockets_per_user=MAX_SOCKETS_PER_USER)
        node = Node(hub, make_broker(clock), clock)
        await node.broker.start(node.hub, node.on_control)
        try:
            yield node
        finally:
            await node.broker.stop()


async def test_a_claimed_device_is_online_until_released(node: Node) -> None:
    await node.connect(1)
    await node.connect(2)
    assert await node.broker.online([1, 2, 3]) == {1, 2}
    await node.disconnect(1)
    assert await node.broker.online([1, 2, 3]) == {2}


async def test_no_device_is_online_before_any_claim(node: Node) -> None:
    assert await node.broker.online([1, 2]) == set()


async def test_deliver_to_a_device_held_nowhere_else_is_false(node: Node) -> None:
    assert not await node.broker.deliver(5, "frame")


async def test_the_asker_of_a_request_is_remembered(node: Node) -> None:
    await node.broker.remember_request(1, "r1", 2)
    assert await node.broker.asker(1, "r1") == 2
    assert await node.broker.asker(1, "other") is None
    assert await node.broker.asker(9, "r1") is None  # another host's ids are its own


async def test_a_request_id_used_by_two_clients_of_a_host_has_no_asker(node: Node) -> None:
    await node.broker.remember_request(1, 7, 2)
    await node.broker.remember_request(1, 7, 3)
    assert await node.broker.asker(1, 7) is None


async def test_a_remembered_request_expires(node: Node) -> None:
    await node.broker.remember_request(1, "r1", 2)
    node.clock.advance(REQUEST_TTL_SECONDS + 1)
    assert await node.broker.asker(1, "r1") is None


async def test_a_host_remembers_its_latest_requests_only(node: Node) -> None:
    await asyncio.gather(*(node.broker.remember_request(1, n, 2) for n in range(PER_HOST + 1)))
    assert await node.broker.asker(1, 0) is None  # the oldest went first
    assert await node.broker.asker(1, 1) == 2
    assert await node.broker.asker(1, PER_HOST) == 2


async def test_a_string_id_and_a_number_id_are_different_requests(node: Node) -> None:
    await node.broker.remember_request(1, 5, 2)
    assert await node.broker.asker(1, "5") is None


async def test_ids_that_cannot_be_keys_are_never_remembered(node: Node) -> None:
    for req_id in (None, True, 1.5, ["a"], "x" * 129):
        await node.broker.remember_request(1, req_id, 2)
        assert await node.broker.asker(1, req_id) is None


@pytest.mark.parametrize(
    "control",
    [
        CloseSessions(1, 4001, "revoked", credential="user", token_version_below=3),
        ForgetPairings((1, 2)),
        ForgetUser(1),
    ],
)
async def test_a_broadcast_reaches_this_process_once(node: Node, control: Control) -> None:
    await node.broker.broadcast(control)
    assert node.controls == [control]


async def test_the_socket_cap_counts_the_users_other_live_devices(node: Node) -> None:
    for device_id in range(1, MAX_SOCKETS_PER_USER + 1):
        await node.connect(device_id, user_id=7)
    assert not await node.broker.has_room(7, 99)
    assert await node.broker.has_room(7, 1)  # replacing a device's own socket
    assert await node.broker.has_room(8, 99)  # another user
    await node.disconnect(1)
    assert await node.broker.has_room(7, 99)
