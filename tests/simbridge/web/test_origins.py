"""The browser pages that may open a socket: the allowlist, and the page this server served."""

from __future__ import annotations

import pytest

from simbridge.web.origins import origin_allowed

LISTED = frozenset({"https://app.example"})


@pytest.mark.parametrize(
    ("origin", "own_host"),
    [
        ("https://app.example", "relay.example"),  # listed
        ("http://relay.example:8100", "relay.example:8100"),  # the console of this server
        ("https://relay.example", "relay.example"),  # behind a TLS proxy
        ("https://relay.example", "relay.example:443"),  # a default port on one side
        ("http://relay.example:80", "relay.example"),
        ("https://RELAY.example", "relay.EXAMPLE"),  # host names have no case
    ],
)
def test_a_listed_origin_or_the_servers_own_may_open_a_socket(origin: str, own_host: str) -> None:
    assert origin_allowed(origin, own_host, LISTED)


@pytest.mark.parametrize(
    ("origin", "own_host"),
    [
        ("null", "relay.example"),  # sandboxed iframes and file:// pages
        ("", "relay.example"),
        ("relay.example", "relay.example"),  # no scheme
        ("ftp://relay.example", "relay.example"),
        ("http://relay.example:8101", "relay.example:8100"),  # another port of the same host
        ("http://relay.example", "relay.example:8100"),
        ("http://relay.example.evil.example", "relay.example"),
        ("http://evil.example", ""),  # a handshake without Host
        ("http://", ""),
    ],
)
def test_any_other_origin_may_not(origin: str, own_host: str) -> None:
    assert not origin_allowed(origin, own_host, LISTED)
