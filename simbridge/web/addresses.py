"""The client's address, as far as it can be trusted."""

from __future__ import annotations

from sanic import Request

from simbridge.config import Settings


def client_address(request: Request, settings: Settings) -> str:
    """The peer's address; behind a trusted proxy, the address that proxy reports.

    The header is believed only when the connection comes from one of `trusted_proxies`,
    and only its last entry (the one the proxy itself appended) is used: earlier entries of
    `X-Forwarded-For` are whatever the client chose to send.
    """
    peer = request.conn_info.client_ip if request.conn_info else ""
    header = settings.trusted_proxy_header
    if header and peer in settings.proxies:
        reported = request.headers.get(header, "").split(",")[-1].strip()
        if reported:
            return reported
    return peer or "unknown"
