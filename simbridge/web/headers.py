"""Security headers on every REST reply: nothing here is meant to be framed, sniffed,
cached or run as a page."""

from __future__ import annotations

from sanic import Request
from sanic.response import BaseHTTPResponse

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The API docs page loads Swagger UI's scripts; every other reply is data only.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_PREFIX = "/docs"


async def add_security_headers(request: Request, response: BaseHTTPResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(DOCS_PREFIX):
        response.headers.setdefault("Content-Security-Policy", API_CSP)
