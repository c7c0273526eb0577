"""What every `Broker` promises, run against each implementation with fake connections.

Each entry of `BROKERS` makes the brokers of nodes sharing one backend; the cases that need
two nodes of the Redis broker are in test_redis_broker.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from simbridge.hub import Broker, Hub, MemoryBroker
from simbridge.hub.control import CloseSessions, Control, ForgetPairings, ForgetUser
from tests.fakes import FakeConnection
from tests.redis_server import redis_backend
from tests.simbridge.hub.test_local import new_hub, new_session

MAX_SOCKETS_PER_USER = 3

BrokerFactory = Callable[[], Broker]
"""Makes the broker of one node; the nodes of one factory share a backend."""


@asynccontextmanager
async def memory_backend() -> AsyncIterator[BrokerFactory]:
    yield MemoryBroker


BROKERS: dict[str, Callable[[], AbstractAsyncContextManager[BrokerFactory]]] = {
    "memory": memory_backend,
    "redis": lambda: redis_backend(max_sockets_per_user=MAX_SOCKETS_PER_USER),
}


@dataclass
class Node:
    """One process: its hub, its broker and the control messages that reached it."""

    hub: Hub
    broker: Broker
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
        node = Node(new_hub(max_sockets_per_user=MAX_SOCKETS_PER_USER), make_broker())
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
