"""Units of webhooks: which targets are refused, the retry schedule, the signature."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from simbridge.services.webhook_delivery import retry_delay, signature
from simbridge.services.webhook_targets import (
    TargetRefused,
    check_target,
    is_public,
    parse_target,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "172.32.0.1", "2606:4700::1"])
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["ftp://x.org/", "x.org/hook", "http:///nohost", "http://u:p@x.org/", "http://x:99999/"]
)
def test_urls_that_are_not_http_targets(url: str) -> None:
    with pytest.raises(TargetRefused):
        parse_target(url)


def test_ports_default_by_scheme() -> None:
    assert parse_target("https://Example.org/a") == ("example.org", 443)
    assert parse_target("http://example.org:8080/a") == ("example.org", 8080)


async def test_loopback_names_are_refused_unless_allowed() -> None:
    with pytest.raises(TargetRefused):
        await check_target("http://localhost:8080/x", allow_private=False)
    with pytest.raises(TargetRefused):
        await check_target("http://no-such-host.invalid/x", allow_private=False)
    await check_target("http://localhost:8080/x", allow_private=True)


def test_retry_delays_double_with_jitter_and_a_cap() -> None:
    assert retry_delay(1, 30, 3600, rand=lambda: 1.0) == 30
    assert retry_delay(1, 30, 3600, rand=lambda: 0.0) == 15
    assert retry_delay(3, 30, 3600, rand=lambda: 1.0) == 120
    assert retry_delay(50, 30, 3600, rand=lambda: 1.0) == 3600
    assert retry_delay(10_000, 30, 3600, rand=lambda: 0.5) <= 3600


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature("key", body) == f"sha256={expected}"
