"""Attacks on the user token (a JWT) and on its revocation.

- Every token carries `sub`, `iat`, `exp` and `ver`; only HS256 signed with the server's key is
  accepted; a token that is forged, expired, incomplete or names no user is 401 JSON on REST
  and HTTP 401 at the WebSocket handshake.
- `POST /auth/logout-all` and `POST /auth/password` revoke every older token at once, and close
  the live sockets opened with them (4001); the fresh token they return works.
- A socket's token may travel in `?token=`, `Authorization: Bearer` or the subprotocol list
  `simbridge, bearer.<token>`; the handshake reply never echoes it.
"""

from __future__ import annotations

import base64
import hmac
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from simbridge.clock import ManualClock
from simbridge.config import Settings
from simbridge.models import DeviceType
from simbridge.protocol import CLOSE_REVOKED
from simbridge.services.admission import Admission
from tests.conftest import TEST_SECRET
from tests.helpers import (
    CARRIERS,
    RECV_TIMEOUT,
    Account,
    LiveServer,
    Pair,
    Reply,
    assert_closed_with,
    assert_error,
    assert_relays,
    bearer,
    dial,
    handshake,
    login,
    make_account,
    make_device,
    make_pair,
    receive,
    serving,
    socket,
    socket_url,
)

OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"


# --- helpers ----------------------------------------------------------------------------------
def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: str, digest: str = "sha256") -> str:
    """A compact JWS built by hand, so any header and any signature can be sent."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), digest).digest() if key else b""
    return f"{signing_input}.{b64url(signature)}"


def valid_claims(user_id: int, clock: ManualClock, ttl: int = 3600) -> dict[str, Any]:
    """Claims the server would accept for a user who never revoked (version 0)."""
    issued = int(clock().timestamp())
    return {"sub": str(user_id), "iat": issued, "exp": issued + ttl, "ver": 0}


def hs256(claims: dict[str, Any]) -> str:
    return forge({"alg": "HS256", "typ": "JWT"}, claims, TEST_SECRET)


def without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in claims.items() if key != name}


async def logout_all(http: httpx.AsyncClient, token: str) -> str:
    reply = await http.post("/auth/logout-all", headers=bearer(token))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


async def change_password(
    http: httpx.AsyncClient, token: str, current: str, new: str
) -> httpx.Response:
    return await http.post(
        "/auth/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(token),
    )


# --- claims -----------------------------------------------------------------------------------
async def test_login_token_carries_sub_iat_exp_ver_with_configured_ttl(
    alice: Account, settings: Settings, clock: ManualClock
) -> None:
    assert jwt.get_unverified_header(alice.token)["alg"] == "HS256"
    claims = jwt.decode(
        alice.token,
        TEST_SECRET,
        algorithms=["HS256"],
        options={"require": ["sub", "iat", "exp", "ver"], "verify_exp": False},
    )
    assert claims["sub"] == str(alice.user_id)
    assert claims["iat"] == int(clock().timestamp())
    assert claims["exp"] - claims["iat"] == settings.token_ttl_seconds
    assert type(claims["ver"]) is int


async def test_issue_token_with_short_ttl_expires_exactly_at_exp(
    settings: Settings, clock: ManualClock
) -> None:
    async with serving(settings, token_ttl_seconds=60) as served:
        server, http = served.live, served.http
        carol = await make_account(http, "carol")
        host = await make_device(http, carol, "host")
        claims = jwt.decode(carol.token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 60

        clock.advance(claims["exp"] - clock().timestamp() - 0.000_001)  # 1 µs before `exp`
        assert (await http.get("/devices", headers=carol.headers)).status_code == 200
        assert (await handshake(server, host, carol.token)).status == 101

        clock.advance(0.000_001)  # now == exp: no longer valid (RFC 7519 §4.1.4)
        assert clock().timestamp() == claims["exp"]
        assert_error(await http.get("/devices", headers=carol.headers), 401)
        assert (await handshake(server, host, carol.token)).status == 401


async def test_use_token_after_ttl_is_401_on_rest_and_handshake(
    server: LiveServer,
    http: httpx.AsyncClient,
    pair: Pair,
    settings: Settings,
    clock: ManualClock,
) -> None:
    alice = pair.host.owner
    clock.advance(settings.token_ttl_seconds + 1)

    assert_error(await http.get("/devices", headers=alice.headers), 401)
    for carrier in CARRIERS:
        assert (await handshake(server, pair.host, alice.token, carrier)).status == 401, carrier


# --- forged and malformed tokens --------------------------------------------------------------
BadToken = Callable[[int, ManualClock], str]

BAD_TOKENS: dict[str, BadToken] = {
    "alg-none": lambda uid, clock: forge(
        {"alg": "none", "typ": "JWT"}, valid_claims(uid, clock), ""
    ),
    "alg-None-signed": lambda uid, clock: forge(
        {"alg": "None", "typ": "JWT"}, valid_claims(uid, clock), TEST_SECRET
    ),
    "hs512-server-key": lambda uid, clock: forge(
        {"alg": "HS512", "typ": "JWT"}, valid_claims(uid, clock), TEST_SECRET, "sha512"
    ),
    "hs384-server-key": lambda uid, clock: forge(
        {"alg": "HS384", "typ": "JWT"}, valid_claims(uid, clock), TEST_SECRET, "sha384"
    ),
    "hs256-other-key": lambda uid, clock: forge(
        {"alg": "HS256", "typ": "JWT"}, valid_claims(uid, clock), OTHER_SECRET
    ),
    "rs256-header-hmac-signed": lambda uid, clock: forge(
        {"alg": "RS256", "typ": "JWT"}, valid_claims(uid, clock), TEST_SECRET
    ),
    "missing-exp": lambda uid, clock: hs256(without(valid_claims(uid, clock), "exp")),
    "missing-sub": lambda uid, clock: hs256(without(valid_claims(uid, clock), "sub")),
    "missing-iat": lambda uid, clock: hs256(without(valid_claims(uid, clock), "iat")),
    "ver-float": lambda uid, clock: hs256({**valid_claims(uid, clock), "ver": 0.0}),
    "ver-false": lambda uid, clock: hs256({**valid_claims(uid, clock), "ver": False}),
    "ver-string": lambda uid, clock: hs256({**valid_claims(uid, clock), "ver": "0"}),
    "ver-null": lambda uid, clock: hs256({**valid_claims(uid, clock), "ver": None}),
    "exp-in-past": lambda uid, clock: hs256({**valid_claims(uid, clock), "exp": 1}),
    "exp-string": lambda uid, clock: hs256(
        {**valid_claims(uid, clock), "exp": str(int(clock().timestamp()) + 3600)}
    ),
    "sub-nonexistent-user": lambda uid, clock: hs256(valid_claims(987_654, clock)),
    "sub-not-a-number": lambda uid, clock: hs256({**valid_claims(uid, clock), "sub": "alice"}),
    "sub-zero": lambda uid, clock: hs256({**valid_claims(uid, clock), "sub": "0"}),
    "sub-huge": lambda uid, clock: hs256({**valid_claims(uid, clock), "sub": "9" * 40}),
    "payload-swapped-signature-kept": lambda uid, clock: (
        hs256(valid_claims(uid + 1, clock)).rsplit(".", 1)[0]
        + "."
        + hs256(valid_claims(uid, clock)).rsplit(".", 1)[1]
    ),
    "no-signature": lambda uid, clock: hs256(valid_claims(uid, clock)).rsplit(".", 1)[0] + ".",
}


async def test_use_bad_token_is_401_on_rest_and_handshake(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, clock: ManualClock
) -> None:
    """Every entry of BAD_TOKENS, on REST and through every handshake carrier."""
    replies: dict[str, Reply] = {}
    for name, make_token in BAD_TOKENS.items():
        token = make_token(pair.host.owner.user_id, clock)
        for path in ("GET /devices", "POST /auth/logout-all"):
            method, url = path.split()
            replies[f"{name}: {path}"] = Reply.of(
                await http.request(method, url, headers=bearer(token))
            )
        for carrier in CARRIERS:
            handshake_reply = (await handshake(server, pair.host, token, carrier)).reply
            replies[f"{name}: handshake via {carrier}"] = handshake_reply
    assert [f"{case} -> {reply}" for case, reply in replies.items() if reply.status != 401] == []
    for reply in replies.values():
        assert_error(reply, 401)


async def test_forge_helper_builds_accepted_token_when_nothing_is_wrong(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, clock: ManualClock
) -> None:
    """Control for the table above: the same builder, with nothing tampered, is accepted."""
    token = hs256(valid_claims(pair.host.owner.user_id, clock))

    assert (await http.get("/devices", headers=bearer(token))).status_code == 200
    assert (await handshake(server, pair.host, token, "query")).status == 101


async def test_use_token_of_deleted_user_is_401_on_rest_and_handshake(
    server: LiveServer, http: httpx.AsyncClient, settings: Settings, clock: ManualClock
) -> None:
    """A user removed from the database behind the server's back (there is no API for it) is
    refused once the user cache (`user_cache_seconds`) has let go of them."""
    carol = await make_account(http, "carol")
    host = await make_device(http, carol, "host")
    assert (await http.get("/devices", headers=carol.headers)).status_code == 200  # cached now
    with sqlite3.connect(settings.db_path) as db:
        db.execute("DELETE FROM users WHERE id = ?", (carol.user_id,))
    clock.advance(settings.user_cache_seconds + 1)

    assert_error(await http.get("/devices", headers=carol.headers), 401)
    assert (await handshake(server, host, carol.token)).status == 401


async def test_use_legacy_token_without_ver_works_until_user_revokes(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, clock: ManualClock
) -> None:
    alice = pair.host.owner
    legacy = jwt.encode(
        without(valid_claims(alice.user_id, clock), "ver"), TEST_SECRET, algorithm="HS256"
    )

    assert (await http.get("/devices", headers=bearer(legacy))).status_code == 200
    async with socket(server, pair.host, legacy) as host, socket(server, pair.client, legacy) as c:
        await assert_relays(host, c)

        await logout_all(http, alice.token)

        await assert_closed_with(host, CLOSE_REVOKED, "revoked")
    assert_error(await http.get("/devices", headers=bearer(legacy)), 401)
    assert (await handshake(server, pair.host, legacy, "query")).status == 401


# --- logout-all -------------------------------------------------------------------------------
async def test_logout_all_revokes_old_token_on_rest_and_handshake(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    alice = pair.host.owner
    second_session = (await login(http, alice.username, alice.password)).json()["token"]

    reply = await http.post("/auth/logout-all", headers=alice.headers)

    assert reply.status_code == 200, reply.text
    assert set(reply.json()) == {"token", "user_id"}
    assert reply.json()["user_id"] == alice.user_id
    fresh = reply.json()["token"]
    for old in (alice.token, second_session):
        assert_error(await http.get("/devices", headers=bearer(old)), 401)
        assert_error(await http.post("/auth/logout-all", headers=bearer(old)), 401)
        for carrier in CARRIERS:
            assert (await handshake(server, pair.host, old, carrier)).status == 401, carrier
    assert (await http.get("/devices", headers=bearer(fresh))).status_code == 200
    assert (await handshake(server, pair.host, fresh, "query")).status == 101


async def test_logout_all_twice_revokes_token_from_first_call(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    alice = pair.host.owner
    first = await logout_all(http, alice.token)
    async with socket(server, pair.host, first) as host:
        second = await logout_all(http, first)

        await assert_closed_with(host, CLOSE_REVOKED, "revoked")
    assert_error(await http.get("/devices", headers=bearer(first)), 401)
    assert (await http.get("/devices", headers=bearer(second))).status_code == 200


async def test_logout_all_leaves_other_users_tokens_and_sockets_alone(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair, bob: Account
) -> None:
    alice = pair.host.owner
    bob_pair = await make_pair(http, bob)
    async with (
        socket(server, bob_pair.host) as bob_host,
        socket(server, bob_pair.client) as bob_client,
        socket(server, pair.host) as alice_host,
    ):
        await logout_all(http, alice.token)

        await assert_closed_with(alice_host, CLOSE_REVOKED, "revoked")
        await assert_relays(bob_host, bob_client)
        assert bob_host.close_code is None and bob_client.close_code is None
    assert (await http.get("/devices", headers=bob.headers)).status_code == 200
    assert (await handshake(server, bob_pair.host, bob.token, "query")).status == 101


async def test_logout_all_without_token_is_401(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/auth/logout-all"), 401)


async def test_admission_is_void_once_its_token_is_revoked(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    """Checked once the socket is registered, so a revocation racing the handshake wins."""
    owner = pair.host.owner
    admitted = Admission(owner.user_id, DeviceType.HOST, token_version=0)
    runtime = server.runtime
    assert await admitted.still_valid(pair.host.id, runtime.device_records, runtime.identities)

    await logout_all(http, owner.token)

    assert not await admitted.still_valid(pair.host.id, runtime.device_records, runtime.identities)


# --- password change --------------------------------------------------------------------------
NEW_PASSWORD = "brand-new-pass"


async def test_change_password_with_wrong_current_is_401_and_changes_nothing(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    alice = pair.host.owner
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        reply = await change_password(http, alice.token, "not-my-password", NEW_PASSWORD)

        assert_error(reply, 401)
        await assert_relays(host, client)
    assert (await login(http, alice.username, alice.password)).status_code == 200
    assert_error(await login(http, alice.username, NEW_PASSWORD), 401)
    assert (await http.get("/devices", headers=alice.headers)).status_code == 200
    assert (await handshake(server, pair.host, alice.token, "query")).status == 101


async def test_change_password_to_73_bytes_is_422_and_changes_nothing(
    http: httpx.AsyncClient, alice: Account
) -> None:
    for too_long in ("a" * 73, "é" * 36 + "a"):  # 73 bytes, in 73 and in 37 characters
        reply = await change_password(http, alice.token, alice.password, too_long)

        assert reply.status_code == 422, reply.text
        assert "new_password" in [error["field"] for error in reply.json()["errors"]]
    assert (await login(http, alice.username, alice.password)).status_code == 200
    assert (await http.get("/devices", headers=alice.headers)).status_code == 200


async def test_change_password_to_72_multibyte_bytes_is_accepted(
    http: httpx.AsyncClient, alice: Account
) -> None:
    longest = "é" * 36  # 72 bytes, bcrypt's whole input

    reply = await change_password(http, alice.token, alice.password, longest)

    assert reply.status_code == 200, reply.text
    assert (await login(http, alice.username, longest)).status_code == 200


async def test_change_password_revokes_old_password_and_every_older_token(
    server: LiveServer, http: httpx.AsyncClient, pair: Pair
) -> None:
    alice = pair.host.owner
    second_session = (await login(http, alice.username, alice.password)).json()["token"]

    reply = await change_password(http, alice.token, alice.password, NEW_PASSWORD)

    assert reply.status_code == 200, reply.text
    assert set(reply.json()) == {"token", "user_id"}
    assert reply.json()["user_id"] == alice.user_id
    fresh = reply.json()["token"]
    assert_error(await login(http, alice.username, alice.password), 401)
    assert (await login(http, alice.username, NEW_PASSWORD)).status_code == 200
    for old in (alice.token, second_session):
        assert_error(await http.get("/devices", headers=bearer(old)), 401)
        assert_error(await change_password(http, old, NEW_PASSWORD, "attacker-pick"), 401)
        assert (await handshake(server, pair.host, old, "query")).status == 401
    assert (await http.get("/devices", headers=bearer(fresh))).status_code == 200
    assert (await handshake(server, pair.host, fresh, "header")).status == 101


async def revoke_older_tokens(http: httpx.AsyncClient, alice: Account, how: str) -> str:
    """Revoke alice's tokens through `how` ("logout-all" or "password"); the fresh token."""
    if how == "logout-all":
        return await logout_all(http, alice.token)
    reply = await change_password(http, alice.token, alice.password, NEW_PASSWORD)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


@pytest.mark.parametrize(
    ("how", "old_carriers", "new_carriers"),
    [
        ("logout-all", ("header", "subprotocol"), ("query", "subprotocol")),
        ("password", ("query", "header"), ("subprotocol", "query")),
    ],
    ids=["logout-all", "password"],
)
async def test_revoke_closes_old_token_sockets_with_4001_and_new_token_sockets_relay(
    server: LiveServer,
    http: httpx.AsyncClient,
    pair: Pair,
    how: str,
    old_carriers: tuple[str, str],
    new_carriers: tuple[str, str],
) -> None:
    alice = pair.host.owner
    async with (
        socket(server, pair.host, alice.token, old_carriers[0]) as old_host,
        socket(server, pair.client, alice.token, old_carriers[1]) as old_client,
    ):
        fresh = await revoke_older_tokens(http, alice, how)

        await assert_closed_with(old_host, CLOSE_REVOKED, "revoked")
        await assert_closed_with(old_client, CLOSE_REVOKED, "revoked")

    async with (
        socket(server, pair.host, fresh, new_carriers[0]) as host,
        socket(server, pair.client, fresh, new_carriers[1]) as client,
    ):
        await assert_relays(host, client)
        assert host.close_code is None and client.close_code is None


async def test_change_password_without_token_is_401(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/auth/password", json={"current_password": "secret123", "new_password": NEW_PASSWORD}
    )
    assert_error(reply, 401)


# --- where the socket token travels ----------------------------------------------------------
async def test_connect_with_subprotocol_token_selects_simbridge_and_relays(
    server: LiveServer, pair: Pair
) -> None:
    token = pair.host.owner.token
    async with (
        dial(server, pair.host, token, "subprotocol") as host,
        dial(server, pair.client, token, "subprotocol") as client,
    ):
        assert host.subprotocol == "simbridge"
        assert client.subprotocol == "simbridge"
        assert await receive(host) == {"type": "connected", "device_id": pair.host.id}
        assert await receive(client) == {"type": "connected", "device_id": pair.client.id}
        await assert_relays(host, client)


async def test_connect_with_bad_subprotocol_token_is_401(
    server: LiveServer, pair: Pair, clock: ManualClock
) -> None:
    forged = forge({"alg": "HS256"}, valid_claims(pair.host.owner.user_id, clock), OTHER_SECRET)
    for bad in ("not-a-jwt", "", forged):
        assert (await handshake(server, pair.host, bad, "subprotocol")).status == 401, bad


async def test_connect_with_expired_subprotocol_token_is_401(
    server: LiveServer, pair: Pair, settings: Settings, clock: ManualClock
) -> None:
    clock.advance(settings.token_ttl_seconds + 1)

    assert (await handshake(server, pair.host, pair.host.owner.token, "subprotocol")).status == 401


async def test_connect_plain_client_with_query_token_still_works(
    server: LiveServer, pair: Pair
) -> None:
    """Phone apps in the field: no subprotocol offered, the user JWT in `?token=`."""
    async with socket(server, pair.host) as host, socket(server, pair.client) as client:
        assert host.subprotocol is None and client.subprotocol is None
        await assert_relays(host, client)


async def test_connect_reply_headers_never_echo_token(server: LiveServer, pair: Pair) -> None:
    token = pair.host.owner.token
    for carrier in CARRIERS:
        accepted = await handshake(server, pair.host, token, carrier)

        assert accepted.status == 101, carrier
        assert accepted.subprotocol == ("simbridge" if carrier == "subprotocol" else None)
        for name, value in accepted.headers.items():
            assert token not in value and token not in name, (carrier, name, value)


async def test_connect_refusal_never_echoes_token(
    server: LiveServer, pair: Pair, clock: ManualClock
) -> None:
    expired = pair.host.owner.token
    clock.advance(10**9)  # expired: a real token the server must refuse
    for carrier in CARRIERS:
        refused = await handshake(server, pair.host, expired, carrier)

        assert refused.status == 401, carrier
        assert expired.encode() not in refused.body, carrier
        for name, value in refused.headers.items():
            assert expired not in value and expired not in name, (carrier, name, value)


async def test_connect_offering_only_bearer_subprotocol_does_not_echo_it(
    server: LiveServer, pair: Pair
) -> None:
    """A client that forgets `simbridge` must not get its token selected back as the protocol."""
    token = pair.host.owner.token
    try:
        async with connect(
            socket_url(server, pair.host),
            subprotocols=[Subprotocol(f"bearer.{token}")],
            open_timeout=RECV_TIMEOUT,
            close_timeout=2,
        ) as ws:
            assert ws.subprotocol != f"bearer.{token}"
            assert ws.response is not None
            for name, value in ws.response.headers.raw_items():
                assert token not in value, (name, value)
    except InvalidStatus as refused:
        for name, value in refused.response.headers.raw_items():
            assert token not in value, (name, value)
