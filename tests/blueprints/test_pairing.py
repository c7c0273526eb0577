"""`POST /pair` and `POST /pair/confirm` (contract §1, §2, §3)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from simbridge.clock import ManualClock
from simbridge.config import Settings
from tests.helpers import (
    Account,
    assert_error,
    assert_validation_error,
    confirm_code,
    make_device,
    pair_devices,
    pairing_code,
)

INVALID_CODE = "Invalid or expired pairing code"


async def request_code(http: httpx.AsyncClient, owner: Account, query: str) -> httpx.Response:
    return await http.post(f"/pair{query}", headers=owner.headers)


def assert_invalid_code(reply: httpx.Response) -> None:
    assert_error(reply, 400, INVALID_CODE)


# --- POST /pair -------------------------------------------------------------------------------
async def test_create_code_returns_six_digits_and_ttl(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")

    reply = await request_code(http, alice, f"?host_device_id={host.id}")

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"code", "expires_in_seconds"}
    assert isinstance(body["code"], str)
    assert re.fullmatch(r"[0-9]{6}", body["code"])
    assert body["expires_in_seconds"] == 600


async def test_create_code_for_other_users_host_is_404(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    bobs_host = await make_device(http, bob, "host")

    reply = await request_code(http, alice, f"?host_device_id={bobs_host.id}")

    assert_error(reply, 404)


async def test_create_code_for_missing_host_is_same_404_as_foreign(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    bobs_host = await make_device(http, bob, "host")

    foreign = await request_code(http, alice, f"?host_device_id={bobs_host.id}")
    missing = await request_code(http, alice, f"?host_device_id={bobs_host.id + 1000}")

    assert_error(missing, 404)
    assert missing.json() == foreign.json()


async def test_create_code_for_client_device_is_403(
    http: httpx.AsyncClient, alice: Account
) -> None:
    client = await make_device(http, alice, "client")

    reply = await request_code(http, alice, f"?host_device_id={client.id}")

    assert_error(reply, 403)


@pytest.mark.parametrize(
    "query",
    ["", "?host_device_id=", "?host_device_id=abc", "?host_device_id=1.5", "?device_id=1"],
    ids=["missing", "empty", "letters", "float", "wrong-name"],
)
async def test_create_code_without_integer_host_id_is_422(
    http: httpx.AsyncClient, alice: Account, query: str
) -> None:
    reply = await request_code(http, alice, query)

    assert_validation_error(reply, "host_device_id")


@pytest.mark.parametrize("host_id", ["0", "-1", str(2**63)], ids=["zero", "negative", "huge"])
async def test_create_code_out_of_range_host_id_is_4xx_not_500(
    http: httpx.AsyncClient, alice: Account, host_id: str
) -> None:
    reply = await request_code(http, alice, f"?host_device_id={host_id}")

    assert reply.status_code in (404, 422), reply.text
    assert_error(reply, reply.status_code)


async def test_create_code_burst_gives_distinct_codes(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")

    codes = await asyncio.gather(*(pairing_code(http, alice, host) for _ in range(50)))

    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)
    assert len(set(codes)) == 50


# --- POST /pair/confirm -----------------------------------------------------------------------
async def test_confirm_returns_paired_with_ids(http: httpx.AsyncClient, alice: Account) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)

    reply = await confirm_code(http, alice, code, client)

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"status", "pairing_id", "host_device_id"}
    assert body["status"] == "paired"
    assert isinstance(body["pairing_id"], int)
    assert body["host_device_id"] == host.id


@pytest.mark.parametrize("same_client", [True, False], ids=["same-client", "another-client"])
async def test_confirm_used_code_is_400(
    http: httpx.AsyncClient, alice: Account, same_client: bool
) -> None:
    host = await make_device(http, alice, "host")
    first = await make_device(http, alice, "client")
    second = first if same_client else await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)
    assert (await confirm_code(http, alice, code, first)).status_code == 200

    reply = await confirm_code(http, alice, code, second)

    assert_invalid_code(reply)


async def test_confirm_code_just_before_expiry_succeeds(
    http: httpx.AsyncClient, alice: Account, clock: ManualClock, settings: Settings
) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)

    clock.advance(settings.pairing_code_ttl_seconds - 1)
    reply = await confirm_code(http, alice, code, client)

    assert reply.status_code == 200, reply.text
    assert reply.json()["host_device_id"] == host.id


async def test_confirm_code_after_expiry_is_400(
    http: httpx.AsyncClient, alice: Account, clock: ManualClock, settings: Settings
) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)

    clock.advance(settings.pairing_code_ttl_seconds + 1)
    reply = await confirm_code(http, alice, code, client)

    assert_invalid_code(reply)


async def test_confirm_other_accounts_code_is_400(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    alices_host = await make_device(http, alice, "host")
    bobs_client = await make_device(http, bob, "client")
    code = await pairing_code(http, alice, alices_host)

    reply = await confirm_code(http, bob, code, bobs_client)

    assert_invalid_code(reply)


async def test_confirm_other_accounts_attempt_leaves_code_usable(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    alices_host = await make_device(http, alice, "host")
    alices_client = await make_device(http, alice, "client")
    bobs_client = await make_device(http, bob, "client")
    code = await pairing_code(http, alice, alices_host)
    assert_invalid_code(await confirm_code(http, bob, code, bobs_client))

    reply = await confirm_code(http, alice, code, alices_client)

    assert reply.status_code == 200, reply.text


async def test_confirm_wrong_code_is_400(http: httpx.AsyncClient, alice: Account) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    reply = await confirm_code(http, alice, wrong, client)

    assert_invalid_code(reply)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef"], ids=["empty", "5", "7", "abc"])
async def test_confirm_malformed_code_is_400(
    http: httpx.AsyncClient, alice: Account, code: str
) -> None:
    client = await make_device(http, alice, "client")

    reply = await confirm_code(http, alice, code, client)

    assert_invalid_code(reply)


async def test_confirm_already_paired_couple_returns_same_pairing_id(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    first = await pair_devices(http, alice, host, client)
    fresh_code = await pairing_code(http, alice, host)

    reply = await confirm_code(http, alice, fresh_code, client)

    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "status": "paired",
        "pairing_id": first.pairing_id,
        "host_device_id": host.id,
    }


async def test_confirm_host_with_two_clients_gives_two_pairings(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")
    first = await pair_devices(http, alice, host, await make_device(http, alice, "client"))
    second = await pair_devices(http, alice, host, await make_device(http, alice, "client"))

    assert first.pairing_id != second.pairing_id


async def test_confirm_client_of_other_user_is_404(
    http: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    host = await make_device(http, alice, "host")
    bobs_client = await make_device(http, bob, "client")
    code = await pairing_code(http, alice, host)

    reply = await confirm_code(http, alice, code, bobs_client)

    assert_error(reply, 404)


async def test_confirm_missing_client_is_404(http: httpx.AsyncClient, alice: Account) -> None:
    host = await make_device(http, alice, "host")
    code = await pairing_code(http, alice, host)

    reply = await confirm_code(http, alice, code, host.id + 1000)

    assert_error(reply, 404)


async def test_confirm_host_as_client_is_403(http: httpx.AsyncClient, alice: Account) -> None:
    host = await make_device(http, alice, "host")
    other_host = await make_device(http, alice, "host")
    code = await pairing_code(http, alice, host)

    reply = await confirm_code(http, alice, code, other_host)

    assert_error(reply, 403)


async def test_confirm_refused_client_leaves_code_usable(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)
    assert_error(await confirm_code(http, alice, code, host), 403)

    reply = await confirm_code(http, alice, code, client)

    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"client_device_id": 1}, "code"),
        ({"code": "123456"}, "client_device_id"),
        ({"code": "123456", "client_device_id": "abc"}, "client_device_id"),
        ({"code": 123456.5, "client_device_id": 1}, "code"),
    ],
    ids=["missing-code", "missing-client", "string-client", "float-code"],
)
async def test_confirm_missing_or_mistyped_field_is_422(
    http: httpx.AsyncClient, alice: Account, payload: dict[str, Any], field: str
) -> None:
    reply = await http.post("/pair/confirm", json=payload, headers=alice.headers)

    assert_validation_error(reply, field)


async def test_confirm_body_not_json_is_400(http: httpx.AsyncClient, alice: Account) -> None:
    reply = await http.post(
        "/pair/confirm",
        content=b"code=123456",
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert_error(reply, 400)


async def test_confirm_without_token_leaves_code_usable(
    http: httpx.AsyncClient, alice: Account
) -> None:
    host = await make_device(http, alice, "host")
    client = await make_device(http, alice, "client")
    code = await pairing_code(http, alice, host)

    reply = await http.post("/pair/confirm", json={"code": code, "client_device_id": client.id})

    assert_error(reply, 401)
    assert (await confirm_code(http, alice, code, client)).status_code == 200
