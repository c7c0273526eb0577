"""Two real `simbridge serve` processes sharing Redis and PostgreSQL behave as one server
(contract §10): a host on one process and its client on the other."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import pytest
from redis.asyncio import Redis

from simbridge.config import Settings
from tests.helpers import (
    Account,
    Pair,
    assert_closed_with,
    assert_marker_arrives_next,
    assert_relays,
    assert_too_many,
    bearer,
    eventually,
    get_sims_command,
    handshake,
    is_offline,
    is_online,
    login,
    make_account,
    make_device,
    make_device_with_token,
    make_pair,
    pair_devices,
    receive,
    send,
    sim_info_event,
    socket,
)
from tests.processes import ServerProcess, Servers
from tests.redis_server import (
    REDIS_URL,
    delete_keys,
    private_redis,
    require_redis,
    unique_prefix,
)

pytestmark = pytest.mark.postgres

NODE_TTL_SECONDS = 2.0  # a killed process's devices are offline everywhere within this
REDIS_RETURN_SECONDS = 15.0  # the bound for routing across to resume


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    http_a: httpx.AsyncClient
    http_b: httpx.AsyncClient
    alice: Account
    pair: Pair


@pytest.fixture
async def cluster(servers: Servers, postgres_url: str) -> AsyncIterator[Cluster]:
    await require_redis()
    prefix = unique_prefix()
    env = {
        "DATABASE_URL": postgres_url,
        "SIMBRIDGE_BROKER": "redis",
        "REDIS_URL": REDIS_URL,
        "SIMBRIDGE_REDIS_PREFIX": prefix,
        "SIMBRIDGE_NODE_TTL_SECONDS": str(NODE_TTL_SECONDS),
        "SIMBRIDGE_HEARTBEAT_SECONDS": "0.5",
    }
    a = await servers.start(**env)
    b = await servers.start(**env)
    try:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
        ):
            alice = await make_account(http_a, "alice")
            yield Cluster(a, b, http_a, http_b, alice, await make_pair(http_a, alice))
    finally:
        await servers.stop_all()
        await delete_keys(REDIS_URL, prefix)


async def test_command_and_answer_cross_processes_both_ways(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host) as host_ws, socket(cluster.b, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "cross-1")  # client on B -> host on A -> back
    async with socket(cluster.b, pair.host) as host_ws, socket(cluster.a, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "cross-2")


async def test_answers_go_to_the_asker_and_other_events_to_every_client_on_either_process(
    cluster: Cluster,
) -> None:
    """The host's process remembers who asked (the command brought its asker along)."""
    host, near = cluster.pair.host, cluster.pair.client
    far = await make_device(cluster.http_a, cluster.alice, "client")
    await pair_devices(cluster.http_a, cluster.alice, host, far)
    async with (
        socket(cluster.a, host) as host_ws,
        socket(cluster.a, near) as near_ws,
        socket(cluster.b, far) as far_ws,
    ):
        for asker_ws, other, other_ws, req_id in (
            (far_ws, near, near_ws, "from-b"),
            (near_ws, far, far_ws, "from-a"),
        ):
            await send(asker_ws, get_sims_command(req_id))
            assert await receive(host_ws) == get_sims_command(req_id)
            await send(host_ws, sim_info_event(req_id))
            assert await receive(asker_ws) == sim_info_event(req_id)
            await assert_marker_arrives_next(host_ws, other, other_ws)
        unsolicited = {"type": "event", "event": "SMS_RECEIVED", "from": "+1", "body": "hi"}
        await send(host_ws, unsolicited)  # fan-out: to every paired client, on either process
        assert (await receive(near_ws), await receive(far_ws)) == (unsolicited, unsolicited)


async def test_presence_and_rest_commands_through_either_process(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host) as host_ws:
        assert await is_online(cluster.http_a, pair.host)
        assert await is_online(cluster.http_b, pair.host)
        for http in (cluster.http_a, cluster.http_b):
            reply = await http.get(
                f"/sims?host_device_id={pair.host.id}", headers=cluster.alice.headers
            )
            assert reply.status_code == 200, reply.text
            command = await receive(host_ws)
            assert command == {
                "type": "command",
                "cmd": "GET_SIMS",
                "req_id": reply.json()["req_id"],
            }
    assert await eventually(lambda: is_offline(cluster.http_b, pair.host))
    reply = await cluster.http_b.get(
        f"/sims?host_device_id={pair.host.id}", headers=cluster.alice.headers
    )
    assert reply.status_code == 503


async def test_a_device_offline_elsewhere_is_target_offline(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.b, pair.client) as client_ws:
        await send(client_ws, get_sims_command("nobody-home"))
        assert await receive(client_ws) == {
            "error": "target_offline",
            "target_device_id": pair.host.id,
            "req_id": "nobody-home",
        }


async def test_a_command_queued_on_one_process_is_written_when_the_host_connects_to_the_other(
    cluster: Cluster,
) -> None:
    """Contract §7 across processes: the queue is known everywhere, the answer finds its asker."""
    pair = cluster.pair
    async with socket(cluster.b, pair.client) as client_ws:
        await send(client_ws, get_sims_command("queued-on-b", offline="queue"))
        assert await receive(client_ws) == {
            "type": "queued",
            "req_id": "queued-on-b",
            "target_device_id": pair.host.id,
        }
        rest = await cluster.http_b.post(
            "/call",
            json={"to_device_id": pair.host.id, "sim": 1, "to": "123", "offline": "queue"},
            headers=cluster.alice.headers,
        )
        assert rest.json()["status"] == "queued", rest.text
        async with socket(cluster.a, pair.host) as host_ws:
            assert await receive(host_ws) == get_sims_command("queued-on-b", offline="queue")
            assert (await receive(host_ws))["req_id"] == rest.json()["req_id"]
            await send(host_ws, sim_info_event("queued-on-b"))
            assert await receive(client_ws) == sim_info_event("queued-on-b")
    state = await cluster.http_a.get("/commands/queued-on-b", headers=cluster.alice.headers)
    assert state.json()["state"] == "answered", state.text
    assert state.json()["answer"] == sim_info_event("queued-on-b")


async def test_a_rest_caller_waiting_on_one_process_gets_the_answer_of_a_host_on_the_other(
    cluster: Cluster,
) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host) as host_ws:
        assert await eventually(lambda: is_online(cluster.http_b, pair.host))
        waiting = asyncio.create_task(
            cluster.http_b.get(
                f"/sims?host_device_id={pair.host.id}&wait=10", headers=cluster.alice.headers
            )
        )
        try:
            command = await receive(host_ws)
            await send(host_ws, sim_info_event(command["req_id"]))
            reply = await asyncio.wait_for(waiting, 10)
        finally:
            waiting.cancel()
    assert reply.json() == {
        "status": "answered",
        "req_id": command["req_id"],
        "answer": sim_info_event(command["req_id"]),
    }


async def test_since_is_refused_under_redis_without_redis_inboxes(cluster: Cluster) -> None:
    """Kept frames across processes are opt-in (SIMBRIDGE_REDIS_INBOXES): without them a
    `since` socket is refused, and v1 sockets are served as ever."""
    client = cluster.pair.client
    refused = await handshake(cluster.a, client, cluster.alice.token, since=0)
    assert refused.status == 400, refused
    assert "SIMBRIDGE_REDIS_INBOXES" in refused.reply.body["detail"]
    assert (await handshake(cluster.b, client, cluster.alice.token)).status == 101


async def test_a_socket_replaced_on_another_process_closes_with_4000(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host) as old_host_ws:
        async with (
            socket(cluster.b, pair.host) as new_host_ws,
            socket(cluster.a, pair.client) as client_ws,
        ):
            await assert_closed_with(old_host_ws, 4000, "replaced")
            await assert_relays(new_host_ws, client_ws, "after-replace")


async def test_logout_all_on_one_process_closes_sockets_on_the_other(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.b, pair.client) as client_ws:
        reply = await cluster.http_a.post("/auth/logout-all", headers=cluster.alice.headers)
        assert reply.status_code == 200
        await assert_closed_with(client_ws, 4001)
        fresh = reply.json()["token"]
        old = await cluster.http_b.get("/devices", headers=cluster.alice.headers)
        new = await cluster.http_b.get("/devices", headers=bearer(fresh))
        assert (old.status_code, new.status_code) == (401, 200)


async def test_a_password_change_on_one_process_revokes_on_the_other_and_its_token_opens_there(
    cluster: Cluster,
) -> None:
    client = cluster.pair.client
    async with socket(cluster.b, client) as client_ws:  # B now remembers alice and the device
        reply = await cluster.http_a.post(
            "/auth/password",
            json={"current_password": cluster.alice.password, "new_password": "another-secret-1"},
            headers=cluster.alice.headers,
        )
        assert reply.status_code == 200, reply.text
        await assert_closed_with(client_ws, 4001)  # the broadcast reached B
    assert (await handshake(cluster.b, client, cluster.alice.token)).status == 401
    assert (await handshake(cluster.b, client, reply.json()["token"])).status == 101


async def test_a_rotated_device_token_is_refused_and_closed_on_the_other_process(
    cluster: Cluster,
) -> None:
    device, old_token = await make_device_with_token(cluster.http_a, cluster.alice, "client")
    async with socket(cluster.b, device, old_token) as device_ws:
        reply = await cluster.http_a.post(
            f"/devices/{device.id}/token", headers=cluster.alice.headers
        )
        assert reply.status_code == 200, reply.text
        await assert_closed_with(device_ws, 4001)
    assert (await handshake(cluster.b, device, old_token)).status == 401
    assert (await handshake(cluster.b, device, reply.json()["device_token"])).status == 101


async def test_a_device_deleted_on_one_process_is_closed_and_unknown_on_the_other(
    cluster: Cluster,
) -> None:
    client = cluster.pair.client
    async with socket(cluster.b, client) as client_ws:
        reply = await cluster.http_a.delete(f"/devices/{client.id}", headers=cluster.alice.headers)
        assert reply.status_code == 200, reply.text
        await assert_closed_with(client_ws, 4002)
    assert (await handshake(cluster.b, client, cluster.alice.token)).status == 404


async def test_unpairing_on_one_process_stops_routing_on_the_other(cluster: Cluster) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host) as host_ws, socket(cluster.b, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "before-unpair")  # B caches the pairing
        reply = await cluster.http_a.delete(
            f"/pairings/{pair.pairing_id}", headers=cluster.alice.headers
        )
        assert reply.status_code == 200
        await send(client_ws, get_sims_command("after-unpair"))
        assert await receive(client_ws) == {"error": "no paired host"}


async def test_a_killed_process_has_its_devices_offline_elsewhere(
    cluster: Cluster, servers: Servers
) -> None:
    pair = cluster.pair
    async with socket(cluster.a, pair.host):
        assert await is_online(cluster.http_b, pair.host)
        await servers.stop(cluster.a, signal.SIGKILL)
        assert await eventually(lambda: is_offline(cluster.http_b, pair.host), NODE_TTL_SECONDS + 3)
    async with socket(cluster.b, pair.host) as host_ws, socket(cluster.b, pair.client) as client_ws:
        await assert_relays(host_ws, client_ws, "after-kill")


async def test_while_redis_is_away_each_process_serves_its_own_sockets(
    servers: Servers, postgres_url: str
) -> None:
    """Redis stops: /health is 503 and new sockets are refused, sockets of one process still
    relay between themselves, a frame for the other process is target_offline; a revocation
    made meanwhile still closes its socket once Redis is back, and routing across resumes."""
    async with private_redis() as redis:
        env = {
            "DATABASE_URL": postgres_url,
            "SIMBRIDGE_BROKER": "redis",
            "REDIS_URL": redis.url,
            "SIMBRIDGE_NODE_TTL_SECONDS": str(NODE_TTL_SECONDS),
            "SIMBRIDGE_HEARTBEAT_SECONDS": "0.5",
        }
        a, b = await servers.start(**env), await servers.start(**env)
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
        ):
            alice = await make_account(http_a, "alice")
            local, across = await make_pair(http_a, alice), await make_pair(http_a, alice)
            async with (
                socket(a, local.host) as local_host,
                socket(a, local.client) as local_client,
                socket(a, across.host) as across_host,
                socket(b, across.client) as across_client,
            ):
                await assert_relays(across_host, across_client, "before")
                redis.stop()

                assert await eventually(lambda: health_is(http_a, 503))
                assert await eventually(lambda: health_is(http_b, 503))
                refused = await handshake(b, local.client, alice.token)
                assert refused.status == 503
                await assert_relays(local_host, local_client, "during")
                await send(across_client, get_sims_command("during"))
                reply = await receive(across_client)
                assert reply["error"] == "target_offline"
                logout = await http_a.post("/auth/logout-all", headers=alice.headers)
                assert logout.status_code == 200
                await assert_closed_with(local_client, 4001)  # on the process that revoked

                await redis.start()

                await assert_closed_with(across_client, 4001)  # found at resync on B
                assert await eventually(lambda: health_is(http_b, 200), REDIS_RETURN_SECONDS)
            fresh = Account(alice.username, alice.password, alice.user_id, logout.json()["token"])
            host, client = replace(across.host, owner=fresh), replace(across.client, owner=fresh)
            async with socket(a, host) as host_ws, socket(b, client) as client_ws:
                await assert_relays(host_ws, client_ws, "after")


# What the heartbeat, the probe and this test send, beside the frames.
BACKGROUND_COMMANDS = {"set", "publish", "ping", "info", "config|resetstat", "config", "client"}


async def frame_commands(redis: Redis) -> dict[str, int]:
    """Redis commands counted since the last CONFIG RESETSTAT, background left out (the
    commands a script runs inside Redis are counted too)."""
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items()}
    return {name: n for name, n in calls.items() if name not in BACKGROUND_COMMANDS}


@dataclass
class PrivateCluster:
    """Two processes on a redis-server of the test's own: its statistics and its clients are
    the test's alone."""

    a: ServerProcess
    b: ServerProcess
    http: httpx.AsyncClient
    redis: Redis
    alice: Account
    inboxes: bool  # SIMBRIDGE_REDIS_INBOXES


@pytest.fixture
async def private_cluster(
    servers: Servers, postgres_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[PrivateCluster]:
    """Two processes on a Redis of their own; with SIMBRIDGE_REDIS_INBOXES when the test
    parametrizes it (indirect) with True."""
    inboxes = getattr(request, "param", False)
    async with private_redis() as server:
        env = {"DATABASE_URL": postgres_url, "SIMBRIDGE_BROKER": "redis", "REDIS_URL": server.url}
        if inboxes:
            env["SIMBRIDGE_REDIS_INBOXES"] = "true"
        a, b = await servers.start(**env), await servers.start(**env)
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http,
            Redis.from_url(server.url, decode_responses=True) as redis,
        ):
            yield PrivateCluster(a, b, http, redis, await make_account(http, "alice"), inboxes)
        await servers.stop_all()


# What the script that keeps a frame (KEEP) runs inside Redis, once per frame (its PUBLISH to
# another node is counted with the background's): the device's counter and owner (HMGET each),
# the owner's liveness (EXISTS), the new seq (HSET), the kept frame (XADD) and its TTL (PEXPIRE).
KEEP_INSIDE = ("hmget", "hmget", "exists", "hset", "xadd", "pexpire")


def kept_frames_cost(frames: int) -> dict[str, int]:
    cost = {"evalsha": frames}
    for name in KEEP_INSIDE:
        cost[name] = cost.get(name, 0) + frames
    return cost


@pytest.mark.parametrize(
    "private_cluster", [False, True], ids=["no-inboxes", "redis-inboxes"], indirect=True
)
async def test_a_frame_costs_one_redis_command_across_processes_and_none_within_one(
    private_cluster: PrivateCluster,
) -> None:
    """One EVALSHA (DELIVER) per cross-process frame, none within one process (issue 9).
    With SIMBRIDGE_REDIS_INBOXES every frame takes its recipient's seq from the counter in
    Redis that all processes share and is kept there (contract §6 across processes): one
    EVALSHA (KEEP) per frame, within one process too."""
    round_trips = 20
    a, b, redis = private_cluster.a, private_cluster.b, private_cluster.redis
    http, alice = private_cluster.http, private_cluster.alice
    local, across = await make_pair(http, alice), await make_pair(http, alice)
    async with (
        socket(a, local.host) as local_host,
        socket(a, local.client) as local_client,
        socket(a, across.host) as across_host,
        socket(b, across.client) as across_client,
    ):
        await assert_relays(local_host, local_client, "warm-up")  # pairings cached, seqs seeded
        await assert_relays(across_host, across_client, "warm-up")
        frames = 2 * round_trips  # a command and its answer each
        await redis.config_resetstat()
        for n in range(round_trips):
            await assert_relays(local_host, local_client, f"local-{n}")
        local_cost = kept_frames_cost(frames) if private_cluster.inboxes else {}
        assert await frame_commands(redis) == local_cost
        await redis.config_resetstat()
        for n in range(round_trips):
            await assert_relays(across_host, across_client, f"across-{n}")
        # one EVALSHA a frame; HMGET and EXISTS (and with inboxes HSET, XADD, PEXPIRE) are its
        # own, run inside Redis
        across_cost = {"evalsha": frames, "hmget": frames, "exists": frames}
        if private_cluster.inboxes:
            across_cost = kept_frames_cost(frames)
        assert await frame_commands(redis) == across_cost


async def test_subscriptions_killed_in_redis_are_taken_again(
    private_cluster: PrivateCluster,
) -> None:
    """CLIENT KILL TYPE pubsub: each process subscribes again (and resyncs) by itself."""
    redis = private_cluster.redis
    pair = await make_pair(private_cluster.http, private_cluster.alice)
    async with (
        socket(private_cluster.a, pair.host) as host_ws,
        socket(private_cluster.b, pair.client) as client_ws,
    ):
        await assert_relays(host_ws, client_ws, "before")
        assert await redis.client_kill_filter(_type="pubsub") == 2

        async def subscribed_again() -> bool:
            return len(await redis.client_list(_type="pubsub")) == 2

        assert await eventually(subscribed_again, REDIS_RETURN_SECONDS)
        await assert_relays(host_ws, client_ws, "after")


async def health_is(http: httpx.AsyncClient, status: int) -> bool:
    return (await http.get("/health")).status_code == status


async def test_login_failures_on_either_process_count_against_one_limit(cluster: Cluster) -> None:
    """Spreading a password guess over the processes does not multiply the attempts."""
    failures = Settings().login_failures_per_username
    for attempt in range(failures):
        http = cluster.http_a if attempt % 2 else cluster.http_b
        assert (await login(http, "alice", "wrong-password")).status_code == 401
    assert_too_many(await login(cluster.http_a, "alice"))


async def test_a_paused_process_resumes_without_two_owners_or_a_mass_close(
    cluster: Cluster,
) -> None:
    """SIGSTOP past the node TTL, the client moves to the other process meanwhile, SIGCONT:
    the paused process keeps its host, closes only the socket now owned elsewhere (4000)."""
    pair, pid = cluster.pair, cluster.a.process.pid
    async with socket(cluster.a, pair.host) as host_ws, socket(cluster.a, pair.client) as stale:
        # the greeting goes out before the claim: pause only once both claims are in Redis
        assert await eventually(lambda: is_online(cluster.http_b, pair.client))
        assert await is_online(cluster.http_b, pair.host)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await eventually(
                lambda: is_offline(cluster.http_b, pair.host), NODE_TTL_SECONDS + 3
            )
            async with socket(cluster.b, pair.client) as client_ws:
                os.kill(pid, signal.SIGCONT)
                await assert_closed_with(stale, 4000)
                assert await eventually(lambda: is_online(cluster.http_b, pair.host))
                await assert_relays(host_ws, client_ws, "after-pause")
        finally:
            os.kill(pid, signal.SIGCONT)  # a no-op unless an assertion above failed
