"""`RedisBroker` with two nodes (two brokers and two hubs in this process) sharing one Redis:
routing, replacement, presence, correlation and broadcasts across nodes, and what happens when
a node dies, its subscription is lost or goes silent, or Redis itself goes away.

Timings are turned down (tests/redis_server.py `FAST`); anything destructive runs against a
private redis-server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from simbridge.clock import ManualClock
from simbridge.hub import Hub, Session
from simbridge.hub.broker import BrokerUnavailable
from simbridge.hub.control import CloseSessions, ForgetPairings, ForgetUser
from simbridge.hub.open_requests import Asked, OpenRequests
from simbridge.hub.redis_scripts import RELEASE, SCRIPTS
from simbridge.protocol import CLOSE_REPLACED, CLOSE_TOO_SLOW
from tests.fakes import FakeConnection
from tests.helpers import eventually
from tests.redis_server import (
    FAST,
    RedisBackend,
    SilentProxy,
    kill_client,
    private_redis,
    redis_backend,
)
from tests.simbridge.hub.test_broker_contract import Node
from tests.simbridge.hub.test_local import new_hub

SEND_TIMEOUT = 0.5
ROOT = Path(__file__).resolve().parents[3]


class Cluster:
    """Nodes sharing one backend and one clock; every node is stopped at the end."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._nodes: list[Node] = []

    async def node(self, hub: Hub | None = None, **options: Any) -> Node:
        if hub is None:  # (an empty hub is falsy)
            hub = new_hub(send_timeout=SEND_TIMEOUT, max_sockets_per_user=10)
        node = Node(hub, self.backend(**options))
        await node.broker.start(node.hub, node.on_control)
        self._nodes.append(node)
        return node

    async def stop(self) -> None:
        await asyncio.gather(*(node.broker.stop() for node in self._nodes))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with redis_backend() as backend:
        cluster = Cluster(backend)
        try:
            yield cluster
        finally:
            await cluster.stop()


class Counter:
    """An `on_resync` that counts."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


class Sluggish(FakeConnection):
    """A socket that never takes a frame at once, but takes each after a short wait."""

    def send_now(self, data: str) -> bool:
        return False

    async def send(self, data: str) -> None:
        await asyncio.sleep(0.002)
        self.sent.append(data)


def subscriber_of(node: Node) -> str:
    return f"simbridge-sub-{node.broker.node_id}"


# --- routing ----------------------------------------------------------------------------------
async def test_frames_reach_the_node_holding_the_device_in_order(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    conn = await b.connect(1)
    frames = [json.dumps({"n": n, "text": "é ✓ 📱"}, ensure_ascii=False) for n in range(200)]
    for frame in frames[:100]:  # one at a time
        assert await a.broker.deliver(1, frame)
    # in one event-loop turn: they travel in one pipeline
    assert all(await asyncio.gather(*(a.broker.deliver(1, frame) for frame in frames[100:])))
    assert await eventually(lambda: len(conn.sent) == len(frames))
    assert conn.sent == frames


async def test_deliver_never_publishes_to_the_calling_node(cluster: Cluster) -> None:
    a, _ = await cluster.node(), await cluster.node()
    conn = await a.connect(1)
    assert not await a.broker.deliver(1, "frame")  # the relay sends it through its hub
    assert conn.sent == []


async def test_a_socket_behind_on_reading_keeps_its_order(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    conn = await b.connect(1, conn=Sluggish())
    frames = [str(n) for n in range(30)]
    assert all(await asyncio.gather(*(a.broker.deliver(1, frame) for frame in frames)))
    assert await eventually(lambda: len(conn.sent) == len(frames))
    assert conn.sent == frames


async def test_a_stalled_socket_does_not_hold_up_frames_for_others(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    stalled = await b.connect(1, conn=FakeConnection(stalled=True))
    other = await b.connect(2)
    for n in range(3):
        assert await a.broker.deliver(1, f"slow {n}")
    assert await a.broker.deliver(2, "fast")
    assert await eventually(lambda: other.sent == ["fast"], timeout=SEND_TIMEOUT / 2)
    assert stalled.aborted_with is None  # still waiting on it
    assert await eventually(lambda: stalled.aborted_with == (CLOSE_TOO_SLOW, "too slow"))
    # the hub dropped that socket without a release: the heartbeat releases it
    assert await eventually(lambda: _offline(a, 1))


# --- ownership and presence -------------------------------------------------------------------
async def test_a_claim_elsewhere_closes_the_old_socket_and_its_late_release_changes_nothing(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    old = await a.connect(1)
    new = await b.connect(1)
    assert await eventually(lambda: old.closed_with == (CLOSE_REPLACED, "replaced"))
    assert not a.hub.holds(1)
    await a.broker.release(1)  # the old socket's handler ends after the replacement
    for node in (a, b):
        assert await node.broker.online([1]) == {1}
    assert await a.broker.deliver(1, "to the new socket")
    assert await eventually(lambda: new.sent == ["to the new socket"])


async def test_a_stale_release_never_removes_a_newer_owner(cluster: Cluster) -> None:
    """A process that lost the device without hearing of it releases its generation late
    (played here by the scripts themselves, as node "stale")."""
    b, c = await cluster.node(), await cluster.node()
    prefix = cluster.backend.prefix
    redis = Redis.from_url(cluster.backend.url, protocol=2, decode_responses=True)
    try:
        await redis.set(f"{prefix}node:stale", "1", px=5000)
        keys = [f"{prefix}dev:1", f"{prefix}gen", f"{prefix}user:1"]
        stale_gen = await redis.eval(SCRIPTS["CLAIM"], 3, *keys, prefix, "stale", 1)
        conn = await b.connect(1)
        assert await redis.eval(RELEASE, 1, keys[0], "stale", stale_gen) == 0
        assert await redis.hget(keys[0], "node") == b.broker.node_id
    finally:
        await redis.aclose()
    assert await c.broker.online([1]) == {1}
    assert await c.broker.deliver(1, "frame")
    assert await eventually(lambda: conn.sent == ["frame"])


async def test_every_node_sees_the_same_devices_online(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    await a.connect(1)
    await b.connect(2)
    for node in (a, b):
        assert await node.broker.online([1, 2, 3]) == {1, 2}
    await b.disconnect(2)
    for node in (a, b):
        assert await node.broker.online([1, 2, 3]) == {1}


async def test_the_socket_cap_counts_sockets_on_every_node(cluster: Cluster) -> None:
    a, b = await cluster.node(max_sockets_per_user=2), await cluster.node(max_sockets_per_user=2)
    await a.connect(1, user_id=7)
    await b.connect(2, user_id=7)
    for node in (a, b):
        assert not await node.broker.has_room(7, 3)
    await b.disconnect(2)
    assert await a.broker.has_room(7, 3)


async def test_a_node_killed_without_closing_has_its_devices_offline_within_its_ttl(
    cluster: Cluster,
) -> None:
    b = await cluster.node()
    backend = cluster.backend
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, backend.url, backend.prefix, json.dumps(FAST)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    ) as child:
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 10)
            assert line == b"ready\n"
            assert await b.broker.online([7]) == {7}
        finally:
            child.kill()
    killed = time.monotonic()
    assert await eventually(lambda: _offline(b, 7), timeout=FAST["node_ttl_seconds"] + 1)
    assert time.monotonic() - killed <= FAST["node_ttl_seconds"] + 0.5
    assert not await b.broker.deliver(7, "frame")


async def _offline(node: Node, device_id: int) -> bool:
    return not await node.broker.online([device_id])


async def _online(node: Node, device_ids: list[int], expected: set[int]) -> bool:
    return await node.broker.online(device_ids) == expected


# A node in a process of its own: claims device 7 and sleeps until killed.
CHILD = """
import asyncio, json, sys
from simbridge.hub.redis import RedisBroker
from tests.simbridge.hub.test_local import new_hub, new_session

async def main():
    url, prefix, timings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    hub = new_hub(send_timeout=1, max_sockets_per_user=10)
    broker = RedisBroker(url, prefix=prefix, **timings)
    async def on_control(control): pass
    await broker.start(hub, on_control)
    session = new_session(7)
    hub.open(session)
    await hub.attach(session)
    await broker.claim(7)
    print("ready", flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


async def test_a_node_that_lost_its_key_keeps_its_devices_and_yields_those_claimed_elsewhere(
    cluster: Cluster,
) -> None:
    """As after a pause longer than the TTL: others took it for dead."""
    resyncs = Counter()
    a, b = await cluster.node(on_resync=resyncs), await cluster.node()
    moved = await a.connect(1)
    kept = await a.connect(2)
    redis = Redis.from_url(cluster.backend.url, protocol=2)
    try:
        await redis.delete(f"{cluster.backend.prefix}node:{a.broker.node_id}")
    finally:
        await redis.aclose()
    await b.connect(1)  # the owner looks dead: nobody is told
    assert await eventually(lambda: resyncs.count >= 1)
    assert await eventually(lambda: moved.closed_with == (CLOSE_REPLACED, "replaced"))
    assert kept.closed_with is None
    assert await b.broker.online([1, 2]) == {1, 2}


# --- correlation and broadcasts ---------------------------------------------------------------
async def test_a_command_delivered_with_its_asker_is_remembered_where_the_host_is(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    host = await b.connect(10)
    for asked in (Asked("r1", 2), Asked(5, 3), Asked("x" * 129, 4), Asked(["no key"], 4)):
        assert await a.broker.deliver(10, f"command {asked.req_id}", asked)
    assert await eventually(lambda: len(host.sent) == 4)
    assert host.sent[0] == "command r1"  # the frame arrives as it was sent
    assert (b.hub.asker(10, "r1"), b.hub.asker(10, 5)) == (2, 3)  # the host answers on b
    assert b.hub.asker(10, "5") is None  # the id kept its type
    assert b.hub.asker(10, "x" * 129) is None  # too long to be remembered, still delivered
    assert a.hub.asker(10, "r1") is None  # nothing is kept on the sender's node


async def test_a_broadcast_is_applied_once_on_every_node_first_on_the_sender(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node(), await cluster.node()
    forget = ForgetUser(7)
    await a.broker.broadcast(forget)
    assert a.controls == [forget]
    assert await eventually(lambda: b.controls == [forget])
    close = CloseSessions(1, 4001, "revoked", device_id=2, credential="user", token_version_below=3)
    await b.broker.broadcast(close)
    assert await eventually(lambda: a.controls == [forget, close])
    pairings = ForgetPairings((1, 2))
    await a.broker.broadcast(pairings)
    # b heard its own `close` before `pairings` (one channel, in order) and skipped it
    assert await eventually(lambda: b.controls[-1:] == [pairings])
    assert b.controls == [forget, close, pairings]
    assert a.controls == [forget, close, pairings]


# --- losing the subscription ------------------------------------------------------------------
async def test_a_node_whose_subscription_is_killed_resyncs_and_is_reachable_again(
    cluster: Cluster,
) -> None:
    resyncs = Counter()
    a, b = await cluster.node(on_resync=resyncs), await cluster.node()
    conn = await a.connect(1)
    await kill_client(cluster.backend.url, subscriber_of(a))
    assert await eventually(lambda: resyncs.count >= 1)
    assert await eventually(lambda: b.broker.deliver(1, "after"))
    assert await eventually(lambda: "after" in conn.sent)
    assert await b.broker.online([1]) == {1}
    assert await a.broker.check()


async def test_a_node_whose_subscription_goes_silent_subscribes_again(cluster: Cluster) -> None:
    target = urlsplit(cluster.backend.url).port or 6379
    proxy = SilentProxy(target)
    await proxy.start()
    try:
        resyncs = Counter()
        a = await cluster.node(on_resync=resyncs, url=proxy.url)
        b = await cluster.node()
        conn = await a.connect(1)
        proxy.mute()  # a's sockets stay open and hear nothing more

        async def heard() -> bool:
            await b.broker.deliver(1, "frame")  # lost while a's subscription is silent
            return bool(conn.sent)

        assert await eventually(heard)
        assert resyncs.count >= 1
    finally:
        await proxy.stop()


class BuggyHub(Hub):
    """A hub that raises once `broken`: a bug the listener runs into."""

    broken = False

    def session_of(self, device_id: int) -> Session | None:
        if self.broken:
            raise RuntimeError("a bug")
        return super().session_of(device_id)


async def test_a_node_whose_listener_dies_exits(cluster: Cluster) -> None:
    exits: list[int] = []
    hub = BuggyHub(SEND_TIMEOUT, 10, OpenRequests(ManualClock(), 600))
    a, b = await cluster.node(hub, exit_process=exits.append), await cluster.node()
    await a.connect(1)
    hub.broken = True
    assert await b.broker.deliver(1, "frame")
    assert await eventually(lambda: exits == [70])


# --- Redis itself going away ------------------------------------------------------------------
async def test_while_redis_is_down_nodes_serve_locally_and_recover_when_it_is_back() -> None:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(private_redis())
        cluster = Cluster(RedisBackend(url=server.url))
        stack.push_async_callback(cluster.stop)
        resyncs = Counter()
        a, b = await cluster.node(on_resync=resyncs), await cluster.node()
        conn = await a.connect(1)
        assert await b.broker.deliver(1, "before")

        server.stop()
        assert not await b.broker.deliver(1, "while down")
        assert await a.broker.online([1, 2]) == {1}  # what the hub holds
        assert not await a.broker.check()
        with pytest.raises(BrokerUnavailable):
            await b.connect(2)  # the hub attached it; the claim could not be made
        await b.broker.broadcast(ForgetUser(1))
        assert b.controls == [ForgetUser(1)]  # applied here at once, published once Redis is back

        await server.start()  # the same port, empty
        assert await eventually(lambda: b.broker.deliver(1, "after"))
        assert await eventually(lambda: conn.sent == ["before", "after"])
        assert resyncs.count >= 1
        # both nodes re-claimed their sockets (b's claim of 2 had failed)
        assert await eventually(lambda: _online(a, [1, 2], {1, 2}))
        assert await a.broker.check()
        assert await eventually(
            lambda: a.controls == [ForgetUser(1)]
        )  # kept by b, sent at its resync


async def test_a_node_started_while_redis_is_down_joins_when_it_is_up() -> None:
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(private_redis())
        server.stop()
        cluster = Cluster(RedisBackend(url=server.url))
        stack.push_async_callback(cluster.stop)
        resyncs = Counter()
        a = await cluster.node(on_resync=resyncs)  # waits one command timeout, then serves
        assert not await a.broker.check()
        await server.start()
        assert await eventually(a.broker.check)
        assert await eventually(lambda: resyncs.count >= 1)  # may follow the first answer
        b = await cluster.node()
        conn = await b.connect(1)
        assert await a.broker.deliver(1, "frame")
        assert await eventually(lambda: conn.sent == ["frame"])
