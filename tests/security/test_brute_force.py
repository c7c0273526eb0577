"""Brute force against a real server: login, password change, registration, pairing codes,
the trusted-proxy header, WebSocket message rate and live sockets per user.

Limit windows run on the `clock` fixture (a ManualClock the server uses), so "after the window"
is `clock.advance(...)`, never a sleep. The WebSocket token bucket runs on the real monotonic
clock; its rate is set so low that it cannot refill while a test runs.
"""

from __future__ import annotations

import httpx
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.helpers import (
    PASSWORD,
    Account,
    Device,
    LiveServer,
    assert_closed_with,
    assert_next_is_pong,
    assert_rest_marker_arrives_next,
    assert_too_many,
    confirm_code,
    eventually,
    get_sims_command,
    handshake,
    login,
    make_account,
    make_device,
    paired_world,
    pairing_code,
    receive,
    register,
    send,
    serving,
    socket,
)

WRONG = "wrong-password"
# Three wrong passwords lock a username; the address limit is far away.
BY_USERNAME = {"login_failures_per_username": 3, "login_failures_per_address": 100}


async def fail_logins(
    http: httpx.AsyncClient, username: str, times: int, headers: dict[str, str] | None = None
) -> None:
    """`times` wrong passwords for `username`, each answered 401 (not yet limited)."""
    for attempt in range(times):
        reply = await login(http, username, WRONG, headers)
        assert reply.status_code == 401, f"attempt {attempt + 1}: {reply.status_code} {reply.text}"


def other_code(code: str) -> str:
    """A well-formed 6-digit code that is not `code`."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- login ------------------------------------------------------------------------------------
async def test_login_over_username_limit_returns_429_even_for_right_password(
    settings: Settings,
) -> None:
    async with serving(settings, **BY_USERNAME) as srv:
        alice = await make_account(srv.http, "alice")
        await fail_logins(srv.http, "alice", 3)

        assert_too_many(await login(srv.http, "alice", WRONG), settings.login_window_seconds)
        right = await login(srv.http, "alice", alice.password)
        assert_too_many(right, settings.login_window_seconds)
        assert "token" not in right.json()


async def test_login_after_window_passes_succeeds_again(
    settings: Settings, clock: ManualClock
) -> None:
    window = 60.0
    async with serving(settings, **BY_USERNAME, login_window_seconds=window) as srv:
        alice = await make_account(srv.http, "alice")
        await fail_logins(srv.http, "alice", 3)
        assert_too_many(await login(srv.http, "alice", alice.password), window)

        clock.advance(window - 1)
        still_locked = await login(srv.http, "alice", alice.password)
        assert assert_too_many(still_locked, window) == 1

        clock.advance(1)
        reply = await login(srv.http, "alice", alice.password)
        assert reply.status_code == 200, reply.text
        assert reply.json()["user_id"] == alice.user_id


async def test_login_unknown_username_locks_out_exactly_like_existing_one(
    settings: Settings,
) -> None:
    async with serving(settings, **BY_USERNAME) as srv:
        await make_account(srv.http, "alice")
        wrong_replies = {}
        locked_replies = {}
        for username in ("alice", "nobody"):
            first = await login(srv.http, username, WRONG)
            assert first.status_code == 401, first.text
            wrong_replies[username] = first.json()
            await fail_logins(srv.http, username, 2)
            locked_replies[username] = await login(srv.http, username, WRONG)

        assert wrong_replies["alice"] == wrong_replies["nobody"]
        existing, unknown = locked_replies["alice"], locked_replies["nobody"]
        assert_too_many(existing, settings.login_window_seconds)
        assert_too_many(unknown, settings.login_window_seconds)
        assert unknown.json() == existing.json()
        assert unknown.headers["Retry-After"] == existing.headers["Retry-After"]


async def test_login_success_resets_username_failure_count(settings: Settings) -> None:
    async with serving(settings, **BY_USERNAME) as srv:
        alice = await make_account(srv.http, "alice")
        await fail_logins(srv.http, "alice", 2)
        assert (await login(srv.http, "alice", alice.password)).status_code == 200

        await fail_logins(srv.http, "alice", 2)  # 4 failures in the window, 2 since the success
        reply = await login(srv.http, "alice", alice.password)
        assert reply.status_code == 200, reply.text


async def test_login_failures_across_usernames_hit_address_limit(settings: Settings) -> None:
    async with serving(
        settings, login_failures_per_username=100, login_failures_per_address=4
    ) as srv:
        alice = await make_account(srv.http, "alice")
        for username in ("u1", "u2", "u3", "alice"):
            await fail_logins(srv.http, username, 1)

        assert_too_many(await login(srv.http, "u5", WRONG), settings.login_window_seconds)
        assert_too_many(
            await login(srv.http, "alice", alice.password), settings.login_window_seconds
        )


async def test_login_success_keeps_address_failure_count(settings: Settings) -> None:
    async with serving(
        settings, login_failures_per_username=100, login_failures_per_address=3
    ) as srv:
        alice = await make_account(srv.http, "alice")
        await fail_logins(srv.http, "u1", 2)
        assert (await login(srv.http, "alice", alice.password)).status_code == 200
        await fail_logins(srv.http, "u2", 1)

        assert_too_many(await login(srv.http, "u3", WRONG), settings.login_window_seconds)


async def test_change_password_with_wrong_current_passwords_returns_429(
    settings: Settings, clock: ManualClock
) -> None:
    window = 60.0
    async with serving(settings, **BY_USERNAME, login_window_seconds=window) as srv:
        alice = await make_account(srv.http, "alice")

        async def change(current: str) -> httpx.Response:
            return await srv.http.post(
                "/auth/password",
                json={"current_password": current, "new_password": "brand-new-pw"},
                headers=alice.headers,
            )

        for attempt in range(3):
            reply = await change(WRONG)
            assert reply.status_code == 401, f"attempt {attempt + 1}: {reply.text}"
        assert_too_many(await change(WRONG), window)
        assert_too_many(await change(alice.password), window)
        # Guessing through /auth/password locks the username for /auth/login too.
        assert_too_many(await login(srv.http, "alice", alice.password), window)

        clock.advance(window)
        reply = await change(alice.password)
        assert reply.status_code == 200, reply.text
        assert (await login(srv.http, "alice", "brand-new-pw")).status_code == 200


# --- register ---------------------------------------------------------------------------------
async def test_register_over_address_limit_returns_429_and_creates_nothing(
    settings: Settings, clock: ManualClock
) -> None:
    window = 120.0
    async with serving(
        settings, registrations_per_address=3, registration_window_seconds=window
    ) as srv:
        for username in ("user1", "user2", "user3"):
            reply = await register(srv.http, username)
            assert reply.status_code == 200, reply.text

        assert_too_many(await register(srv.http, "user4"), window)
        assert (await login(srv.http, "user4")).status_code == 401

        clock.advance(window)
        reply = await register(srv.http, "user4")
        assert reply.status_code == 200, reply.text


# --- pairing confirm --------------------------------------------------------------------------
async def test_confirm_pairing_over_user_limit_refuses_right_code_without_spending_it(
    settings: Settings, clock: ManualClock
) -> None:
    window = 60.0
    async with serving(
        settings,
        pair_failures_per_user=3,
        pair_failures_per_address=100,
        pair_window_seconds=window,
        pairing_code_ttl_seconds=600,
    ) as srv:
        alice = await make_account(srv.http, "alice")
        host = await make_device(srv.http, alice, "host")
        client = await make_device(srv.http, alice, "client")
        code = await pairing_code(srv.http, alice, host)
        for attempt in range(3):
            reply = await confirm_code(srv.http, alice, other_code(code), client)
            assert reply.status_code == 400, f"attempt {attempt + 1}: {reply.text}"

        assert_too_many(await confirm_code(srv.http, alice, other_code(code), client), window)
        assert_too_many(await confirm_code(srv.http, alice, code, client), window)
        assert (await srv.http.get("/pairings", headers=alice.headers)).json() == []

        clock.advance(window)
        reply = await confirm_code(srv.http, alice, code, client)
        assert reply.status_code == 200, reply.text
        assert reply.json()["host_device_id"] == host.id


async def test_confirm_pairing_failures_of_two_users_hit_address_limit(
    settings: Settings,
) -> None:
    async with serving(settings, pair_failures_per_user=100, pair_failures_per_address=3) as srv:
        owners = [await make_account(srv.http, name) for name in ("alice", "bob")]
        codes: list[tuple[Account, str, Device]] = []
        for owner in owners:
            host = await make_device(srv.http, owner, "host")
            client = await make_device(srv.http, owner, "client")
            codes.append((owner, await pairing_code(srv.http, owner, host), client))
        (alice, alice_code, alice_client), (bob, bob_code, bob_client) = codes
        for owner, code, client in (codes[0], codes[0], codes[1]):
            reply = await confirm_code(srv.http, owner, other_code(code), client)
            assert reply.status_code == 400, reply.text

        window = settings.pair_window_seconds
        assert_too_many(await confirm_code(srv.http, bob, bob_code, bob_client), window)
        assert_too_many(await confirm_code(srv.http, alice, alice_code, alice_client), window)


# --- client address behind a proxy ------------------------------------------------------------
def forwarded(chain: str) -> dict[str, str]:
    return {"X-Forwarded-For": chain}


async def test_login_behind_trusted_proxy_counts_last_forwarded_address(
    settings: Settings,
) -> None:
    async with serving(
        settings,
        trusted_proxy_header="X-Forwarded-For",
        login_failures_per_username=100,
        login_failures_per_address=2,
    ) as srv:
        window = settings.login_window_seconds
        await fail_logins(srv.http, "u1", 2, forwarded("203.0.113.5"))
        assert_too_many(await login(srv.http, "u2", WRONG, forwarded("203.0.113.5")), window)

        # Another forwarded address has its own count, and only the last entry names it:
        # the first entry is whatever the client wrote, here the locked address.
        spoofed = forwarded("203.0.113.5, 198.51.100.7")
        assert (await login(srv.http, "u3", WRONG, spoofed)).status_code == 401
        assert (await login(srv.http, "u4", WRONG, forwarded("198.51.100.7"))).status_code == 401
        assert_too_many(await login(srv.http, "u5", WRONG, forwarded("198.51.100.7")), window)


@pytest.mark.parametrize(
    "proxy",
    [{"trusted_proxy_header": "X-Forwarded-For", "trusted_proxies": "10.9.9.9"}, {}],
    ids=["peer-not-a-trusted-proxy", "no-header-configured"],
)
async def test_login_counts_peer_address_when_forwarded_header_is_not_trusted(
    settings: Settings, proxy: dict[str, str]
) -> None:
    async with serving(
        settings, login_failures_per_username=100, login_failures_per_address=2, **proxy
    ) as srv:
        assert (await login(srv.http, "u1", WRONG, forwarded("203.0.113.1"))).status_code == 401
        assert (await login(srv.http, "u2", WRONG, forwarded("203.0.113.2"))).status_code == 401

        reply = await login(srv.http, "u3", WRONG, forwarded("203.0.113.3"))
        assert_too_many(reply, settings.login_window_seconds)


async def test_register_without_configured_header_ignores_spoofed_forwarded_for(
    settings: Settings,
) -> None:
    async with serving(settings, registrations_per_address=2) as srv:
        for number in (1, 2):
            reply = await srv.http.post(
                "/auth/register",
                json={"username": f"user{number}", "password": PASSWORD},
                headers=forwarded(f"203.0.113.{number}"),
            )
            assert reply.status_code == 200, reply.text

        refused = await srv.http.post(
            "/auth/register",
            json={"username": "user3", "password": PASSWORD},
            headers=forwarded("203.0.113.3"),
        )
        assert_too_many(refused, settings.registration_window_seconds)


# --- WebSocket message rate -------------------------------------------------------------------
SLOW_RATE = 0.01  # tokens a second: not even one comes back while a test runs
BURST = 5


async def test_send_commands_over_burst_returns_rate_limited_and_relays_nothing(
    settings: Settings,
) -> None:
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=BURST
    ) as world:
        async with (
            socket(world.live, world.pair.host) as host_ws,
            socket(world.live, world.pair.client) as client_ws,
        ):
            req_ids = [f"req-{n}" for n in range(BURST + 3)]
            for req_id in req_ids:
                await send(client_ws, get_sims_command(req_id))

            relayed = [(await receive(host_ws))["req_id"] for _ in range(BURST)]
            assert relayed == req_ids[:BURST]
            refused = [await receive(client_ws) for _ in range(3)]
            assert refused == [{"error": "rate_limited", "req_id": r} for r in req_ids[BURST:]]

            # Still open: the next frame is answered (and still limited), not closed.
            await send(client_ws, get_sims_command("after"))
            assert await receive(client_ws) == {"error": "rate_limited", "req_id": "after"}
            assert client_ws.close_code is None
            await assert_rest_marker_arrives_next(world.http, world.pair.host, host_ws)


async def test_send_pings_over_burst_returns_rate_limited(settings: Settings) -> None:
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=BURST
    ) as world:
        async with socket(world.live, world.pair.client) as client_ws:
            for _ in range(BURST):
                await assert_next_is_pong(client_ws)

            await send(client_ws, {"type": "ping"})
            assert await receive(client_ws) == {"error": "rate_limited", "req_id": None}
            assert client_ws.close_code is None


async def test_send_malformed_frames_over_burst_returns_rate_limited(
    settings: Settings,
) -> None:
    """A flood of frames that do not parse is a flood too: it must not escape the meter."""
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=BURST, max_json_depth=4
    ) as world:
        async with socket(world.live, world.pair.client) as client_ws:
            for _ in range(BURST):
                await assert_next_is_pong(client_ws)

            await client_ws.send("this is not JSON")
            assert await receive(client_ws) == {"error": "rate_limited", "req_id": None}
            await send(client_ws, {"type": "ping", "pad": [[[[[]]]]]})
            assert await receive(client_ws) == {"error": "rate_limited", "req_id": None}


async def test_send_rate_limited_frame_too_deep_for_stdlib_keeps_socket_open(
    settings: Settings,
) -> None:
    deep = '{"type":"ping","req_id":1.5,"x":' + "[" * 990 + "]" * 990 + "}"
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=1
    ) as world:
        async with socket(world.live, world.pair.host) as host_ws:
            await assert_next_is_pong(host_ws)
            await host_ws.send(deep)
            assert await receive(host_ws) == {"error": "rate_limited", "req_id": 1.5}
            await host_ws.send(deep)  # the socket is still open and answering
            assert await receive(host_ws) == {"error": "rate_limited", "req_id": 1.5}


async def test_send_rate_is_metered_per_connection(settings: Settings) -> None:
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=BURST
    ) as world:
        async with (
            socket(world.live, world.pair.host) as host_ws,
            socket(world.live, world.pair.client) as client_ws,
        ):
            for n in range(BURST + 1):
                await send(client_ws, get_sims_command(f"c{n}"))
            for _ in range(BURST):
                await receive(host_ws)
            assert await receive(client_ws) == {"error": "rate_limited", "req_id": f"c{BURST}"}

            # The host's own socket has its own, untouched bucket.
            await assert_next_is_pong(host_ws)


async def test_reconnect_does_not_refill_rate_bucket(settings: Settings) -> None:
    async with paired_world(
        settings, ws_messages_per_second=SLOW_RATE, ws_message_burst=3
    ) as world:
        host, client = world.pair.host, world.pair.client
        async with socket(world.live, host) as host_ws:
            async with socket(world.live, client) as client_ws:
                for n in range(3):
                    await send(client_ws, get_sims_command(f"a{n}"))
                    await receive(host_ws)
            async with socket(world.live, client) as client_ws:
                await send(client_ws, get_sims_command("again"))
                assert await receive(client_ws) == {"error": "rate_limited", "req_id": "again"}
                await assert_rest_marker_arrives_next(world.http, host, host_ws)


# --- live sockets per user --------------------------------------------------------------------
async def admitted(live: LiveServer, device: Device) -> bool:
    """Whether `device`'s socket opens now (the server frees a slot only once it has noticed a
    close)."""
    return (await handshake(live, device, device.owner.token)).status == 101


async def test_open_socket_over_user_limit_is_refused_with_429(settings: Settings) -> None:
    async with serving(settings, max_sockets_per_user=2) as srv:
        alice = await make_account(srv.http, "alice")
        first, second, third = [
            await make_device(srv.http, alice, "client", f"phone-{n}") for n in range(3)
        ]
        bob = await make_account(srv.http, "bob")
        bobs = await make_device(srv.http, bob, "client")

        async with socket(srv.live, first), socket(srv.live, second):
            refused = await handshake(srv.live, third, alice.token)
            assert refused.status == 429
            retry = refused.header("Retry-After")
            assert retry is not None and retry.isdigit() and int(retry) > 0
            # The cap is per user: bob is not affected by alice's sockets.
            assert await admitted(srv.live, bobs)


async def test_reopen_connected_device_socket_at_user_limit_is_allowed(
    settings: Settings,
) -> None:
    async with serving(settings, max_sockets_per_user=2) as srv:
        alice = await make_account(srv.http, "alice")
        first, second = [
            await make_device(srv.http, alice, "client", f"phone-{n}") for n in range(2)
        ]
        async with socket(srv.live, first) as old, socket(srv.live, second):
            async with socket(srv.live, first) as replacement:
                await assert_closed_with(old, 4000)
                await assert_next_is_pong(replacement)


async def test_open_socket_after_one_closes_is_allowed(settings: Settings) -> None:
    async with serving(settings, max_sockets_per_user=2) as srv:
        alice = await make_account(srv.http, "alice")
        first, second, third = [
            await make_device(srv.http, alice, "client", f"phone-{n}") for n in range(3)
        ]
        async with socket(srv.live, first):
            async with socket(srv.live, second):
                assert (await handshake(srv.live, third, alice.token)).status == 429
            assert await eventually(lambda: admitted(srv.live, third))
