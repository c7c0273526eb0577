"""Where a webhook may point (contract §9): `http(s)` only, and, unless private targets are
allowed, never at a private, loopback, link-local or otherwise non-public address. The host
name is resolved and every address it resolves to is checked, when the webhook is created and
again before every try (a name's addresses can change)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_SECONDS = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The URL may not be called; the message says why (for a 422 or a log line)."""


def parse_target(url: str) -> tuple[str, int]:
    """The host and port of an `http(s)` URL; TargetRefused for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused("must be a valid http(s) URL") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http or https URL")
    if not parts.hostname:
        raise TargetRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: IpAddress) -> bool:
    """Whether an address is on the public internet: not private (10/8, 172.16/12,
    192.168/16, fc00::/7…), loopback, link-local (169.254/16, fe80::/10), multicast, reserved
    or unspecified; an IPv4-mapped IPv6 address is judged as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
    )


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT


async def addresses_of(host: str, port: int) -> set[IpAddress]:
    """Every address `host` resolves to (an IP literal is itself), without blocking the loop."""
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise TargetRefused(f"host name {host!r} does not resolve") from exc
    found: set[IpAddress] = set()
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope id is not part of it
        found.add(ipaddress.ip_address(text))
    if not found:
        raise TargetRefused(f"host name {host!r} does not resolve")
    return found


async def check_target(url: str, allow_private: bool) -> None:
    """Raise TargetRefused unless `url` may be called now."""
    host, port = parse_target(url)
    if allow_private:
        return
    for address in await addresses_of(host, port):
        if not is_public(address):
            raise TargetRefused(
                f"must not point at a private, loopback or link-local address ({host} is {address})"
            )
