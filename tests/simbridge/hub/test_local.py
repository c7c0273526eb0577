"""The local hub's rules, with fake connections: one live socket per device, replacement,
delivery, slow consumers, the per-user cap and shutdown."""

from __future__ import annotations

from simbridge.clock import ManualClock
from simbridge.hub import Hub, Session
from simbridge.hub.open_requests import PER_HOST, OpenRequests
from simbridge.limits import TokenBucket
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_GOING_AWAY, CLOSE_REPLACED, CLOSE_TOO_SLOW
from tests.fakes import FakeConnection

SEND_TIMEOUT = 0.05
MAX_SOCKETS_PER_USER = 3
REQUEST_TTL_SECONDS = 600.0


def new_hub(
    send_timeout: float = SEND_TIMEOUT,
    max_sockets_per_user: int = MAX_SOCKETS_PER_USER,
    clock: ManualClock | None = None,
) -> Hub:
    open_requests = OpenRequests(clock or ManualClock(), REQUEST_TTL_SECONDS)
    return Hub(send_timeout, max_sockets_per_user, open_requests)


def new_session(device_id: int, user_id: int = 1, conn: FakeConnection | None = None) -> Session:
    return Session(
        conn=conn or FakeConnection(),
        device_id=device_id,
        device_type=DeviceType.HOST,
        user_id=user_id,
        token_version=0,
        bucket=TokenBucket(50, 200),
    )


async def live(hub: Hub, device_id: int, user_id: int = 1, **conn: bool) -> FakeConnection:
    """Open and attach a session with a fake connection; returns the connection."""
    session = new_session(device_id, user_id, FakeConnection(**conn))
    hub.open(session)
    await hub.attach(session)
    assert isinstance(session.conn, FakeConnection)
    return session.conn


async def test_send_reaches_the_attached_connection() -> None:
    hub = new_hub()
    conn = await live(hub, 1)
    assert await hub.send(1, "frame")
    assert conn.sent == ["frame"]


async def test_send_to_a_device_without_connection_is_false() -> None:
    hub = new_hub()
    conn = await live(hub, 1)
    assert not await hub.send(2, "frame")
    assert conn.sent == []


async def test_attach_replaces_and_closes_the_previous_socket_with_4000() -> None:
    hub = new_hub()
    old = await live(hub, 1)
    new = await live(hub, 1)
    assert old.closed_with == (CLOSE_REPLACED, "replaced")
    assert await hub.send(1, "frame")
    assert (old.sent, new.sent) == ([], ["frame"])


async def test_detach_of_a_replaced_session_keeps_the_new_one() -> None:
    hub = new_hub()
    old, new = new_session(1), new_session(1)
    for session in (old, new):
        hub.open(session)
        await hub.attach(session)
    assert not hub.detach(old)
    assert hub.online([1]) == {1}
    assert hub.detach(new)
    assert hub.online([1]) == set()


async def test_online_names_only_attached_devices() -> None:
    hub = new_hub()
    await live(hub, 1)
    await live(hub, 3)
    hub.open(new_session(4))  # greeting: open but not yet attached
    assert hub.online([1, 2, 3, 4]) == {1, 3}


async def test_a_peer_that_stopped_reading_is_aborted_with_1008_and_detached() -> None:
    hub = new_hub()
    stalled = await live(hub, 1, stalled=True)
    assert not await hub.send(1, "frame")
    assert stalled.aborted_with == (CLOSE_TOO_SLOW, "too slow")
    assert hub.online([1]) == set()


async def test_a_socket_that_closed_under_the_sender_is_offline_not_an_error() -> None:
    hub = new_hub()
    broken = await live(hub, 1, broken=True)
    assert not await hub.send(1, "frame")
    assert hub.online([1]) == set()
    assert broken.aborted_with is None


async def test_the_per_user_cap_counts_other_devices_only() -> None:
    hub = new_hub()
    for device_id in range(1, MAX_SOCKETS_PER_USER + 1):
        await live(hub, device_id)
    assert not hub.has_room(1, 99)
    assert hub.has_room(1, 1)  # replacing a device's own socket
    assert hub.has_room(2, 99)  # another user


async def test_a_closed_session_frees_its_place_under_the_cap() -> None:
    hub = new_hub()
    sessions = [new_session(device_id) for device_id in range(1, MAX_SOCKETS_PER_USER + 1)]
    for session in sessions:
        hub.open(session)
    hub.close(sessions[0])
    assert hub.has_room(1, 99)
    assert len(hub) == MAX_SOCKETS_PER_USER - 1


async def test_opened_by_checks_user_and_type_of_the_live_session() -> None:
    hub = new_hub()
    await live(hub, 1, user_id=7)
    assert hub.opened_by(7, 1, DeviceType.HOST)
    assert not hub.opened_by(8, 1, DeviceType.HOST)
    assert not hub.opened_by(7, 1, DeviceType.CLIENT)


async def test_close_every_closes_open_and_live_sockets_with_1001() -> None:
    hub = new_hub()
    first = await live(hub, 1)
    greeting = new_session(2)
    hub.open(greeting)
    await hub.close_every(CLOSE_GOING_AWAY, "server shutdown")
    assert first.closed_with == (CLOSE_GOING_AWAY, "server shutdown")
    assert isinstance(greeting.conn, FakeConnection)
    assert greeting.conn.closed_with == (CLOSE_GOING_AWAY, "server shutdown")
    assert hub.online([1, 2]) == set()


async def test_wait_until_none_returns_once_every_handler_closed() -> None:
    hub = new_hub()
    session = new_session(1)
    hub.open(session)
    assert not await hub.wait_until_none(0.01)
    hub.close(session)
    assert await hub.wait_until_none(0.01)


# --- correlation: who asked the hosts held here -------------------------------------------
def test_the_asker_of_a_request_is_remembered() -> None:
    hub = new_hub()
    hub.remember_request(1, "r1", 2)
    assert hub.asker(1, "r1") == 2
    assert hub.asker(1, "other") is None
    assert hub.asker(9, "r1") is None  # another host's ids are its own


def test_a_request_id_used_by_two_clients_of_a_host_has_no_asker() -> None:
    hub = new_hub()
    hub.remember_request(1, 7, 2)
    hub.remember_request(1, 7, 3)
    assert hub.asker(1, 7) is None


def test_a_remembered_request_expires() -> None:
    clock = ManualClock()
    hub = new_hub(clock=clock)
    hub.remember_request(1, "r1", 2)
    clock.advance(REQUEST_TTL_SECONDS + 1)
    assert hub.asker(1, "r1") is None


def test_a_host_remembers_its_latest_requests_only() -> None:
    hub = new_hub()
    for n in range(PER_HOST + 1):
        hub.remember_request(1, n, 2)
    assert hub.asker(1, 0) is None  # the oldest went first
    assert hub.asker(1, 1) == 2
    assert hub.asker(1, PER_HOST) == 2


def test_a_string_id_and_a_number_id_are_different_requests() -> None:
    hub = new_hub()
    hub.remember_request(1, 5, 2)
    assert hub.asker(1, "5") is None


def test_ids_that_cannot_be_keys_are_never_remembered() -> None:
    hub = new_hub()
    for req_id in (None, True, 1.5, ["a"], "x" * 129):
        hub.remember_request(1, req_id, 2)
        assert hub.asker(1, req_id) is None
