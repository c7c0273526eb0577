"""The in-process broker's rules, with fake connections: one live connection per device,
replacement, delivery, slow consumers and shutdown."""

from __future__ import annotations

from simbridge.hub import MemoryBroker
from simbridge.protocol import CLOSE_GOING_AWAY, CLOSE_REPLACED, CLOSE_TOO_SLOW
from tests.fakes import FakeConnection

SEND_TIMEOUT = 0.05


def broker() -> MemoryBroker:
    return MemoryBroker(send_timeout=SEND_TIMEOUT)


async def test_deliver_reaches_the_attached_connection() -> None:
    hub, conn = broker(), FakeConnection()
    await hub.attach(1, conn)
    assert await hub.deliver(1, "frame")
    assert conn.sent == ["frame"]


async def test_deliver_to_a_device_without_connection_is_false() -> None:
    hub, conn = broker(), FakeConnection()
    await hub.attach(1, conn)
    assert not await hub.deliver(2, "frame")
    assert conn.sent == []


async def test_attach_replaces_and_closes_the_previous_connection_with_4000() -> None:
    hub, old, new = broker(), FakeConnection(), FakeConnection()
    await hub.attach(1, old)
    await hub.attach(1, new)
    assert old.closed_with == (CLOSE_REPLACED, "replaced")
    assert await hub.deliver(1, "frame")
    assert (old.sent, new.sent) == ([], ["frame"])


async def test_detach_of_a_replaced_connection_keeps_the_new_one() -> None:
    hub, old, new = broker(), FakeConnection(), FakeConnection()
    await hub.attach(1, old)
    await hub.attach(1, new)
    assert not await hub.detach(1, old)
    assert await hub.online([1]) == {1}
    assert await hub.detach(1, new)
    assert await hub.online([1]) == set()


async def test_online_names_only_attached_devices() -> None:
    hub = broker()
    await hub.attach(1, FakeConnection())
    await hub.attach(3, FakeConnection())
    assert await hub.online([1, 2, 3, 4]) == {1, 3}


async def test_a_peer_that_stopped_reading_is_aborted_with_1008_and_detached() -> None:
    hub, stalled = broker(), FakeConnection(stalled=True)
    await hub.attach(1, stalled)
    assert not await hub.deliver(1, "frame")
    assert stalled.aborted_with == (CLOSE_TOO_SLOW, "too slow")
    assert await hub.online([1]) == set()


async def test_a_socket_that_closed_under_the_sender_is_offline_not_an_error() -> None:
    hub, broken = broker(), FakeConnection(broken=True)
    await hub.attach(1, broken)
    assert not await hub.deliver(1, "frame")
    assert await hub.online([1]) == set()
    assert broken.aborted_with is None


async def test_stop_closes_every_connection_with_1001() -> None:
    hub, first, second = broker(), FakeConnection(), FakeConnection()
    await hub.attach(1, first)
    await hub.attach(2, second)
    await hub.stop()
    assert first.closed_with == second.closed_with == (CLOSE_GOING_AWAY, "server shutdown")
    assert await hub.online([1, 2]) == set()
