"""Contract §6 (seq, kept frames, `since`, replay, `gap`) across processes (§10): two real
`simbridge serve` processes on Redis and PostgreSQL, a host on one and its client on the other.

The frames and helpers are those of tests/blueprints/test_delivery.py (one process); here the
sender and the recipient sit on different processes, the recipient moves between them, and the
processes (and Redis) restart under them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.blueprints.test_delivery import (
    FLOOD,
    LAST,
    UNLIMITED_ENV,
    Inbox,
    assert_marker_next,
    assert_pong_next,
    cancel,
    drain,
    event_to,
    events_to_offline_client,
    flood,
    greeting_of,
    next_frame,
    offline,
    receive_replay,
    receive_up_to,
    replays,
    since_socket,
)
from tests.helpers import (
    RECV_TIMEOUT,
    Account,
    Pair,
    dial,
    eventually,
    get_sims_command,
    history,
    is_online,
    make_account,
    make_device,
    make_pair,
    marker_for,
    pair_devices,
    receive,
    send,
    sim_info_event,
    socket,
)
from tests.processes import GRACEFUL_SECONDS, ServerProcess, Servers
from tests.redis_server import REDIS_URL, delete_keys, private_redis, require_redis, unique_prefix

pytestmark = pytest.mark.postgres

NODE_TTL_SECONDS = 2.0


def cluster_env(postgres_url: str, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres_url,
        "SIMBRIDGE_BROKER": "redis",
        "SIMBRIDGE_REDIS_INBOXES": "true",
        "REDIS_URL": redis_url,
        "SIMBRIDGE_REDIS_PREFIX": prefix,
        "SIMBRIDGE_NODE_TTL_SECONDS": str(NODE_TTL_SECONDS),
        "SIMBRIDGE_HEARTBEAT_SECONDS": "0.5",
        **UNLIMITED_ENV,
        **extra,
    }


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    http_a: httpx.AsyncClient
    http_b: httpx.AsyncClient
    alice: Account
    pair: Pair
    env: dict[str, str]


@pytest.fixture
def cluster_extra_env() -> dict[str, str]:
    """More environment for both processes (tests override it through parametrize)."""
    return {}


@pytest.fixture
async def cluster(
    servers: Servers, postgres_url: str, cluster_extra_env: dict[str, str]
) -> AsyncIterator[Cluster]:
    await require_redis()
    prefix = unique_prefix()
    env = cluster_env(postgres_url, REDIS_URL, prefix, **cluster_extra_env)
    a = await servers.start(**env)
    b = await servers.start(**env)
    try:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
        ):
            alice = await make_account(http_a, "alice")
            pair = await make_pair(http_a, alice)
            yield Cluster(a, b, http_a, http_b, alice, pair, env)
    finally:
        await servers.stop_all()
        await delete_keys(REDIS_URL, prefix)


# --- replay across processes --------------------------------------------------------------------
async def test_a_client_on_one_process_is_replayed_what_its_host_on_the_other_kept_for_it(
    cluster: Cluster,
) -> None:
    """Events a host on A sent its offline client are replayed to the client on B (since=0:
    seq 1..N in order), again from K on either process, then live frames follow with the next
    seq; `GET /history` lists each once, as before."""
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, [f"sms-{n}" for n in range(1, 21)])
        await replays(cluster.b, client, 0, inbox)
        await offline(cluster.http_a, client)
        await replays(cluster.b, client, 12, inbox)
        await replays(cluster.a, client, 19, inbox)  # on the host's own process too
        await offline(cluster.http_a, client)
        async with since_socket(cluster.b, client, inbox.seq) as (client_ws, greeting):
            assert greeting == greeting_of(client, 20)
            await assert_marker_next(host_ws, client, client_ws, inbox)  # seq 21, live
            live = event_to(client, "live")
            await send(host_ws, live)
            assert await next_frame(client_ws) == {**live, "seq": inbox.add(live)}

    async def logged() -> list[dict[str, Any]]:  # each process writes its rows behind
        return await history(cluster.http_b, cluster.alice, client)

    assert await eventually(lambda: has_rows(logged, inbox.seq)), "rows missing"
    rows = await logged()
    assert sorted(row["payload"].get("body", "") for row in rows) == sorted(
        frame.get("body", "") for frame in inbox.frames
    )
    assert all("seq" not in row["payload"] for row in rows), rows


async def test_v1_sockets_across_processes_get_the_senders_bytes_and_no_replay(
    cluster: Cluster,
) -> None:
    """A v1 client on B gets exactly the bytes its host on A sent; what it got is kept all the
    same, and replayed to a later `since` socket."""
    host, client = cluster.pair.host, cluster.pair.client
    raw = (
        f'{{ "event":"SMS_RECEIVED",  "type":"event","to_device_id":{client.id},"body":"h\\u00e9"}}'
    )
    inbox = Inbox()
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["before"])
        async with dial(cluster.b, client, client.owner.token) as client_ws:
            greeting = await asyncio.wait_for(client_ws.recv(), RECV_TIMEOUT)
            assert greeting == f'{{"type":"connected","device_id":{client.id}}}'
            assert await eventually(lambda: is_online(cluster.http_a, client))
            await host_ws.send(raw)
            assert await asyncio.wait_for(client_ws.recv(), RECV_TIMEOUT) == raw  # no replay
            inbox.add(
                {"type": "event", "event": "SMS_RECEIVED", "to_device_id": client.id, "body": "hé"}
            )
        await offline(cluster.http_a, client)
    await replays(cluster.b, client, 0, inbox)


async def test_an_unsolicited_event_is_kept_for_every_client_wherever_it_is(
    cluster: Cluster,
) -> None:
    """Fan-out across processes: each paired client, online on either process or offline,
    keeps the event with a seq of its own."""
    host, first = cluster.pair.host, cluster.pair.client
    second = await make_device(cluster.http_a, cluster.alice, "client", "second")
    await pair_devices(cluster.http_a, cluster.alice, host, second)
    firsts, seconds = Inbox(), Inbox()
    async with socket(cluster.a, host) as host_ws:
        async with since_socket(cluster.b, first, 0) as (first_ws, greeting):
            assert greeting == greeting_of(first, 0)
            for n in range(3):
                unsolicited = {"type": "event", "event": "SMS_RECEIVED", "body": f"fan-{n}"}
                await send(host_ws, unsolicited)
                seconds.add(unsolicited)
                assert await next_frame(first_ws) == {**unsolicited, "seq": firsts.add(unsolicited)}
        await replays(cluster.a, second, 0, seconds)
        await offline(cluster.http_a, first)
        await replays(cluster.a, first, 0, firsts)


# --- the seam between replay and live frames ----------------------------------------------------
ITERATIONS = 6


@pytest.mark.parametrize("iteration", range(ITERATIONS))
async def test_a_flood_from_one_process_reaches_a_client_replaying_on_the_other_once_in_order(
    cluster: Cluster, iteration: int
) -> None:
    """The host on A floods its client, which connects with since=0 on B meanwhile (and on odd
    iterations drops mid-way and reconnects on A with the last seq it got): from replay and
    live frames together it receives seq 1..FLOOD exactly once each, in order, then only the
    marker."""
    host, client = cluster.pair.host, cluster.pair.client
    head = (iteration * 37) % FLOOD
    stride = 1 + iteration % 7
    drop_after = 20 + (iteration * 53) % (FLOOD - 40) if iteration % 2 else FLOOD + 1
    replies: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    greetings: list[dict[str, Any]] = []
    marker = marker_for(client)
    async with socket(cluster.a, host) as host_ws:
        draining = asyncio.create_task(drain(host_ws, replies))
        head_sent = asyncio.Event()
        flooding = asyncio.create_task(flood(host_ws, client, head, head_sent, stride))
        try:
            await asyncio.wait_for(head_sent.wait(), RECV_TIMEOUT)
            since = 0
            for server, want in ((cluster.b, drop_after), (cluster.a, FLOOD + 1)):
                async with since_socket(server, client, since) as (client_ws, greeting):
                    greetings.append(greeting)
                    received += await receive_up_to(client_ws, want, LAST)
                    if want > FLOOD or received[-1].get("body") == LAST:
                        sent = await asyncio.wait_for(flooding, RECV_TIMEOUT)
                        await send(host_ws, marker)
                        after_marker = await next_frame(client_ws)
                        break
                    since = received[-1].get("seq", 0)
        finally:
            await cancel(flooding, draining)

    seqs = [frame.get("seq") for frame in received]
    expected = list(range(1, FLOOD + 1))
    missing = sorted(set(expected) - set(seqs))
    repeated = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    assert seqs == expected, f"missing {missing}, repeated {repeated}; greetings {greetings}"
    assert received == Inbox(sent).after(0)
    assert after_marker == {**marker, "seq": FLOOD + 1}
    for greeting in greetings:
        assert greeting == greeting_of(client, greeting.get("seq", -1)), greeting


# --- commands -----------------------------------------------------------------------------------
async def test_commands_from_another_process_to_a_since_host_carry_seq_and_are_replayed(
    cluster: Cluster,
) -> None:
    """A client on A and REST on A command a `since` host on B: each command carries the
    host's next seq, the answer finds the client, and the host is replayed them on A."""
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.a, client) as client_ws:
        async with since_socket(cluster.b, host, 0) as (host_ws, greeting):
            assert greeting == greeting_of(host, 0)
            assert await eventually(lambda: is_online(cluster.http_a, host))
            command = get_sims_command("across-1")
            await send(client_ws, command)
            assert await next_frame(host_ws) == {**command, "seq": inbox.add(command)}
            await send(host_ws, sim_info_event("across-1"))
            assert await receive(client_ws) == sim_info_event("across-1")  # v1: no seq

            reply = await cluster.http_a.get(
                "/sims", params={"host_device_id": host.id}, headers=cluster.alice.headers
            )
            assert reply.status_code == 200, reply.text
            rest_command = get_sims_command(reply.json()["req_id"])
            assert await next_frame(host_ws) == {**rest_command, "seq": inbox.add(rest_command)}
            await assert_marker_next(client_ws, host, host_ws, inbox)
        await offline(cluster.http_a, host)
        await send(client_ws, get_sims_command("refused"))  # offline: no seq, not kept
        assert (await receive(client_ws))["error"] == "target_offline"
    await replays(cluster.a, host, 0, inbox)


async def test_a_command_queued_on_one_process_takes_its_seq_when_written_on_the_other(
    cluster: Cluster,
) -> None:
    """Contract §7 with §6 across processes: queued on B while the host is offline, written
    to the host's `since` socket on A after its replay, with the seq after the greeting's."""
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.b, client) as client_ws:
        async with since_socket(cluster.a, host, 0) as (host_ws, _):
            await assert_marker_next(client_ws, host, host_ws, inbox)  # seq 1
        await offline(cluster.http_b, host)
        queued = get_sims_command("queued-on-b", offline="queue")
        await send(client_ws, queued)
        assert (await receive(client_ws))["type"] == "queued"
        async with since_socket(cluster.a, host, 0) as (host_ws, greeting):
            assert greeting == greeting_of(host, 1)  # the queued command is not counted yet
            assert await receive_replay(host_ws, 2) == [
                inbox.with_seq(1),
                {**queued, "seq": inbox.add(queued)},
            ]
            await send(host_ws, sim_info_event("queued-on-b"))
            assert await receive(client_ws) == sim_info_event("queued-on-b")
            await assert_marker_next(client_ws, host, host_ws, inbox)  # seq 3
        await offline(cluster.http_b, host)
        later = get_sims_command("queued-later", offline="queue")
        await send(client_ws, later)
        assert (await receive(client_ws))["type"] == "queued"
        # asking for nothing older than a seq beyond the latest still brings the queue
        async with since_socket(cluster.a, host, 10**6) as (host_ws, greeting):
            assert greeting == greeting_of(host, 3)
            assert await receive_replay(host_ws, 1) == [{**later, "seq": inbox.add(later)}]
    state = await cluster.http_a.get("/commands/queued-on-b", headers=cluster.alice.headers)
    assert state.json()["state"] == "answered", state.text


async def test_a_command_queued_for_a_v1_host_takes_a_seq_too(cluster: Cluster) -> None:
    """A queued command written to a v1 socket on A is kept with its seq: a later `since`
    socket of the host on B is replayed it."""
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.b, client) as client_ws:
        queued = get_sims_command("queued-v1", offline="queue")
        await send(client_ws, queued)
        assert (await receive(client_ws))["type"] == "queued"
        async with socket(cluster.a, host) as host_ws:
            assert await receive(host_ws) == queued
            inbox.add(queued)
        await offline(cluster.http_b, host)
    await replays(cluster.b, host, 0, inbox)


# --- bounds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster_extra_env", [{"SIMBRIDGE_INBOX_MAX": "5"}])
async def test_at_most_inbox_max_frames_are_kept_across_processes(cluster: Cluster) -> None:
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, [f"e-{n}" for n in range(1, 9)])
    greeting = await replays(cluster.b, client, 0, inbox, kept_from=4)
    assert greeting == greeting_of(client, 8, gap=True)
    assert (await replays(cluster.b, client, 3, inbox, kept_from=4)).get("gap") is None

    async def logged() -> list[dict[str, Any]]:
        return await history(cluster.http_b, cluster.alice, client)

    assert await eventually(lambda: has_rows(logged, 8)), await logged()  # history keeps all


@pytest.mark.parametrize("cluster_extra_env", [{"SIMBRIDGE_INBOX_TTL_SECONDS": "2"}])
async def test_frames_older_than_the_inbox_ttl_are_gone_across_processes(
    cluster: Cluster,
) -> None:
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["old-1", "old-2"])
        await asyncio.sleep(2.5)
        await events_to_offline_client(host_ws, client, inbox, ["new-3", "new-4"])
    greeting = await replays(cluster.b, client, 0, inbox, kept_from=3)
    assert greeting == greeting_of(client, 4, gap=True)


async def test_a_removed_devices_inbox_leaves_redis_at_once(cluster: Cluster) -> None:
    """Deleting a device (on the other process) deletes its counter and kept frames in Redis,
    instead of leaving them there until their TTL."""
    host, client = cluster.pair.host, cluster.pair.client
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, Inbox(), ["kept-1", "kept-2"])
    inbox_keys = [
        f"{cluster.env['SIMBRIDGE_REDIS_PREFIX']}inbox:{client.id}{end}" for end in ("", ":n")
    ]
    redis = Redis.from_url(REDIS_URL)
    try:
        assert await redis.exists(*inbox_keys) == 2
        deleted = await cluster.http_b.delete(
            f"/devices/{client.id}", headers=cluster.alice.headers
        )
        assert deleted.status_code == 200, deleted.text
        assert await redis.exists(*inbox_keys) == 0
    finally:
        await redis.aclose()


# --- restarts -----------------------------------------------------------------------------------
async def test_seqs_go_on_after_both_processes_restart_and_after_one_is_killed(
    cluster: Cluster, servers: Servers
) -> None:
    """SIGTERM both processes and start two others: the kept frames are replayed and the next
    frame takes the very next seq. Then kill -9 one: seqs still go on, none reused."""
    host, client = cluster.pair.host, cluster.pair.client
    inbox = Inbox()
    async with socket(cluster.a, host) as host_ws:
        await events_to_offline_client(host_ws, client, inbox, ["r-1", "r-2", "r-3"])
    for server in (cluster.a, cluster.b):
        assert await servers.stop(server, signal.SIGTERM) == 0, server.log()
    a, b = await servers.start(**cluster.env), await servers.start(**cluster.env)

    await replays(b, client, 0, inbox)
    async with socket(a, host) as host_ws:
        async with since_socket(b, client, inbox.seq) as (client_ws, greeting):
            assert greeting == greeting_of(client, 3)
            await assert_marker_next(host_ws, client, client_ws, inbox)  # seq 4: none reused
            await servers.stop(b, signal.SIGKILL)
            await asyncio.wait_for(client_ws.wait_closed(), GRACEFUL_SECONDS)
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http_a:
            await offline(http_a, client)
        c = await servers.start(**cluster.env)
        async with since_socket(c, client, 0) as (client_ws, greeting):
            assert greeting == greeting_of(client, 4)
            assert await receive_replay(client_ws, 4) == inbox.after(0)
            await assert_marker_next(host_ws, client, client_ws, inbox)  # seq 5
            await assert_pong_next(client_ws)


async def test_seqs_are_never_reused_after_redis_restarts(
    servers: Servers, postgres_url: str
) -> None:
    """Redis (no persistence) restarts: its counters and kept frames are gone. The next seq
    comes after the mark reserved in the database, above every seq given out, and a device
    asking for what it missed is told `gap`."""
    async with private_redis() as redis:
        env = cluster_env(postgres_url, redis.url, "sb:")
        a, b = await servers.start(**env), await servers.start(**env)
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
        ):
            alice = await make_account(http_a, "alice")
            pair = await make_pair(http_a, alice)
            host, client = pair.host, pair.client
            inbox = Inbox()
            async with socket(a, host) as host_ws:
                await events_to_offline_client(host_ws, client, inbox, ["x-1", "x-2"])
            redis.stop()
            await redis.start()
            assert await eventually(lambda: health_ok(http_a), 15)
            assert await eventually(lambda: health_ok(http_b), 15)
            async with socket(a, host) as host_ws:
                async with since_socket(b, client, inbox.seq) as (client_ws, greeting):
                    latest = greeting.get("seq", -1)
                    assert latest > inbox.seq, greeting
                    assert greeting == greeting_of(client, latest, gap=True)
                    marker = marker_for(client)
                    await send(host_ws, marker)
                    assert await next_frame(client_ws) == {**marker, "seq": latest + 1}
                    await assert_pong_next(client_ws)


async def has_rows(rows: Callable[[], Awaitable[list[dict[str, Any]]]], count: int) -> bool:
    return len(await rows()) == count


async def health_ok(http: httpx.AsyncClient) -> bool:
    return (await http.get("/health")).status_code == 200


async def test_a_since_socket_is_accepted_under_the_redis_broker(cluster: Cluster) -> None:
    """No more 400 for `since` with SIMBRIDGE_BROKER=redis: greeted with its seq at once."""
    client = cluster.pair.client
    async with since_socket(cluster.b, client, 0) as (client_ws, greeting):
        assert greeting == greeting_of(client, 0)
        await assert_pong_next(client_ws)
