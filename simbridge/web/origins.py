"""Which browser pages may open a socket: a handshake's `Origin` against the allowlist and this
server's own address (the page it served itself: the console at /console)."""

from __future__ import annotations

DEFAULT_PORTS = (":80", ":443")


def origin_allowed(origin: str, own_host: str, allowed: frozenset[str]) -> bool:
    """A listed origin, or one that names `own_host`, the host (and port) the browser sent the
    handshake to. The scheme is not compared, since a TLS proxy in front makes an https page
    open a socket that reaches us as plain ws; for the same reason a default port is ignored on
    either side (`https://relay.example` and `Host: relay.example:443` are one address)."""
    if origin in allowed:
        return True
    scheme, separator, host = origin.partition("://")
    if scheme not in ("http", "https") or not separator or not own_host:
        return False
    return _without_default_port(host.lower()) == _without_default_port(own_host.lower())


def _without_default_port(host: str) -> str:
    for port in DEFAULT_PORTS:
        if host.endswith(port):
            return host.removesuffix(port)
    return host
