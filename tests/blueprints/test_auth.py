"""`POST /auth/register`, `POST /auth/login` and the bearer token (contract §1, §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.conftest import TEST_SECRET
from tests.helpers import (
    PASSWORD,
    Account,
    assert_error,
    assert_validation_error,
    bearer,
    login,
    register,
)


# --- register ---------------------------------------------------------------------------------
async def test_register_returns_id_and_username(http: httpx.AsyncClient) -> None:
    reply = await register(http, "carol")

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "username"}
    assert isinstance(body["id"], int)
    assert body["username"] == "carol"


async def test_register_gives_distinct_ids(http: httpx.AsyncClient) -> None:
    first = (await register(http, "carol")).json()
    second = (await register(http, "dave")).json()

    assert first["id"] != second["id"]


async def test_register_taken_username_is_409(http: httpx.AsyncClient) -> None:
    assert (await register(http, "carol")).status_code == 200

    reply = await register(http, "carol", "another-password")

    assert_error(reply, 409)


async def test_register_taken_username_keeps_first_password(http: httpx.AsyncClient) -> None:
    await register(http, "carol", "first-password")
    await register(http, "carol", "second-password")

    assert (await login(http, "carol", "first-password")).status_code == 200
    assert_error(await login(http, "carol", "second-password"), 401)


@pytest.mark.parametrize(
    "username",
    ["abc", "a" * 32, "A.b_c-9", "UPPER", "123", "._-"],
    ids=["3-chars", "32-chars", "all-classes", "upper", "digits", "punctuation"],
)
async def test_register_valid_username_is_accepted(http: httpx.AsyncClient, username: str) -> None:
    reply = await register(http, username)

    assert reply.status_code == 200, reply.text
    assert reply.json()["username"] == username


@pytest.mark.parametrize(
    "username",
    [
        "ab",
        "a" * 33,
        "",
        "with space",
        "slash/name",
        "at@sign",
        "ünïcode",
        "tab\tname",
        "semi;colon",
    ],
    ids=["2-chars", "33-chars", "empty", "space", "slash", "at", "non-ascii", "tab", "semicolon"],
)
async def test_register_invalid_username_is_422(http: httpx.AsyncClient, username: str) -> None:
    reply = await register(http, username)

    assert_validation_error(reply, "username")


@pytest.mark.parametrize(
    "password",
    ["s" * 6, "s" * 72, "a" * 70 + "é", "é" * 36, "€" * 24],
    ids=["6-bytes", "72-bytes", "72-bytes-mixed", "72-bytes-2-byte-chars", "72-bytes-3-byte-chars"],
)
async def test_register_password_within_72_bytes_is_accepted(
    http: httpx.AsyncClient, password: str
) -> None:
    reply = await register(http, "carol", password)

    assert reply.status_code == 200, reply.text
    assert (await login(http, "carol", password)).status_code == 200


@pytest.mark.parametrize(
    "password",
    ["s" * 5, "", "s" * 73, "a" * 71 + "é", "é" * 37, "€" * 25, "🙂" * 19],
    ids=[
        "5-bytes",
        "empty",
        "73-bytes",
        "73-bytes-in-72-chars",
        "74-bytes-in-37-chars",
        "75-bytes-in-25-chars",
        "76-bytes-in-19-chars",
    ],
)
async def test_register_password_outside_6_to_72_bytes_is_422(
    http: httpx.AsyncClient, password: str
) -> None:
    reply = await register(http, "carol", password)

    assert_validation_error(reply, "password")


@pytest.mark.parametrize("password", ["12345", "a" * 71 + "é"], ids=["5-bytes", "73-bytes"])
async def test_register_rejected_password_leaves_username_free(
    http: httpx.AsyncClient, password: str
) -> None:
    assert_validation_error(await register(http, "carol", password), "password")

    reply = await register(http, "carol")

    assert reply.status_code == 200, reply.text
    assert reply.json()["username"] == "carol"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": PASSWORD}, "username"),
        ({"username": "carol"}, "password"),
        ({"username": 12345, "password": PASSWORD}, "username"),
        ({"username": "carol", "password": 1234567}, "password"),
        ({"username": None, "password": PASSWORD}, "username"),
    ],
    ids=["missing-username", "missing-password", "int-username", "int-password", "null-username"],
)
async def test_register_missing_or_mistyped_field_is_422(
    http: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    reply = await http.post("/auth/register", json=payload)

    assert_validation_error(reply, field)


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'"carol"', b""],
    ids=["not-json", "array", "string", "empty"],
)
async def test_register_body_not_a_json_object_is_400(
    http: httpx.AsyncClient, content: bytes
) -> None:
    reply = await http.post(
        "/auth/register", content=content, headers={"Content-Type": "application/json"}
    )

    assert_error(reply, 400)


# --- login ------------------------------------------------------------------------------------
async def test_login_returns_token_and_user_id(http: httpx.AsyncClient) -> None:
    user_id = (await register(http, "carol")).json()["id"]

    reply = await login(http, "carol")

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"token", "user_id"}
    assert body["user_id"] == user_id
    assert isinstance(body["token"], str) and body["token"]


async def test_login_token_has_sub_iat_exp_with_configured_ttl(
    http: httpx.AsyncClient, settings: Settings, clock: ManualClock
) -> None:
    user_id = (await register(http, "carol")).json()["id"]

    token = (await login(http, "carol")).json()["token"]

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(
        token, TEST_SECRET, algorithms=["HS256"], options={"require": ["sub", "iat", "exp"]}
    )
    assert int(claims["sub"]) == user_id
    assert claims["iat"] == int(clock().timestamp())
    assert claims["exp"] - claims["iat"] == settings.token_ttl_seconds


async def test_login_token_authenticates_requests(http: httpx.AsyncClient) -> None:
    await register(http, "carol")
    token = (await login(http, "carol")).json()["token"]

    reply = await http.get("/devices", headers=bearer(token))

    assert reply.status_code == 200, reply.text
    assert reply.json() == []


async def test_login_wrong_password_and_unknown_user_give_same_401(
    http: httpx.AsyncClient,
) -> None:
    await register(http, "carol")

    wrong_password = await login(http, "carol", "not-the-password")
    unknown_user = await login(http, "nobody", PASSWORD)

    assert_error(wrong_password, 401)
    assert_error(unknown_user, 401)
    assert wrong_password.json() == unknown_user.json()


async def test_login_password_over_72_bytes_is_401_not_500(http: httpx.AsyncClient) -> None:
    await register(http, "carol")

    reply = await login(http, "carol", "a" * 71 + "é")

    assert_error(reply, 401)


async def test_login_is_case_sensitive_on_username(http: httpx.AsyncClient) -> None:
    await register(http, "carol")

    assert_error(await login(http, "CAROL"), 401)


async def test_login_missing_field_is_422(http: httpx.AsyncClient) -> None:
    reply = await http.post("/auth/login", json={"username": "carol"})

    assert_validation_error(reply, "password")


async def test_login_body_not_json_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/auth/login", content=b"{oops", headers={"Content-Type": "application/json"}
    )

    assert_error(reply, 400)


# --- tokens -----------------------------------------------------------------------------------
async def test_token_valid_until_ttl_then_401(
    http: httpx.AsyncClient, alice: Account, settings: Settings, clock: ManualClock
) -> None:
    clock.advance(settings.token_ttl_seconds - 1)
    assert (await http.get("/devices", headers=alice.headers)).status_code == 200

    clock.advance(2)

    assert_error(await http.get("/devices", headers=alice.headers), 401)


def claims_at(clock: ManualClock, user_id: int, ttl: int = 3600) -> dict[str, Any]:
    issued = int(clock().timestamp())
    return {"sub": str(user_id), "iat": issued, "exp": issued + ttl}


BadToken = Callable[[Account, ManualClock], str]

BAD_TOKENS: dict[str, BadToken] = {
    "unknown-user": lambda account, clock: jwt.encode(
        claims_at(clock, account.user_id + 1000), TEST_SECRET, algorithm="HS256"
    ),
    "other-key": lambda account, clock: jwt.encode(
        claims_at(clock, account.user_id), "another-secret-that-is-long-enough-too", "HS256"
    ),
    "alg-none": lambda account, clock: jwt.encode(
        claims_at(clock, account.user_id), None, algorithm="none"
    ),
    "missing-exp": lambda account, clock: jwt.encode(
        {"sub": str(account.user_id), "iat": int(clock().timestamp())}, TEST_SECRET, "HS256"
    ),
    "non-numeric-sub": lambda account, clock: jwt.encode(
        {**claims_at(clock, account.user_id), "sub": "alice"}, TEST_SECRET, "HS256"
    ),
    "garbage": lambda account, clock: "not-a-jwt",
    "truncated": lambda account, clock: account.token[:-5],
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_devices_with_bad_token_is_401(
    http: httpx.AsyncClient, alice: Account, clock: ManualClock, make_token: BadToken
) -> None:
    token = make_token(alice, clock)

    reply = await http.get("/devices", headers=bearer(token))

    assert_error(reply, 401)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ],
    ids=["empty-header", "bearer-without-token", "basic-scheme"],
)
async def test_devices_with_malformed_authorization_header_is_401(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    reply = await http.get("/devices", headers=headers)

    assert_error(reply, 401)


async def test_devices_with_token_of_the_right_user_is_200(
    http: httpx.AsyncClient, alice: Account, clock: ManualClock
) -> None:
    """Control for the forged-token cases: a hand-made token with the real key does work."""
    token = jwt.encode(claims_at(clock, alice.user_id), TEST_SECRET, algorithm="HS256")

    reply = await http.get("/devices", headers=bearer(token))

    assert reply.status_code == 200, reply.text
