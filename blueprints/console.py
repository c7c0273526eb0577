"""The browser console: `GET /console` and its static files (`simbridge/console/static`).

The files are read once, at import: the console is HTML, CSS and plain ES modules, with no
build step and nothing fetched from another site. Every reply carries a Content-Security-Policy
that lets the page run only the server's own scripts and styles (no inline code at all) and
connect only to its own origin (which covers its WebSocket), and that forbids framing. Assets
are revalidated with an ETag, so a new release is picked up at the next load without a
versioned URL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, raw
from sanic_ext.extensions.openapi import openapi

from simbridge.errors import NotFound

bp = Blueprint("console", url_prefix="/console")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    """Every file of the static folder whose type the console serves, by name."""
    assets = {}
    for entry in (resources.files("simbridge.console") / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    return assets


ASSETS = _load_assets()


def _serve(request: Request, asset: Asset) -> HTTPResponse:
    headers = {
        "Content-Security-Policy": CSP,
        "ETag": asset.etag,
        "Cache-Control": "no-cache",  # kept, but revalidated: a 304 costs no body
    }
    if request.headers.get("if-none-match") == asset.etag:
        return empty(status=304, headers=headers)
    return raw(asset.body, content_type=asset.content_type, headers=headers)


@openapi.exclude()
async def page(request: Request) -> HTTPResponse:
    """The console's single page."""
    return _serve(request, ASSETS[INDEX])


@openapi.exclude()
async def asset(request: Request, name: str) -> HTTPResponse:
    """A stylesheet, script or image of the console; any other name is 404."""
    found = ASSETS.get(name)
    if found is None:
        raise NotFound("No such file in the console")
    return _serve(request, found)


# Registered by call: `/console` and `/console/` alike (Sanic's slashes are not strict).
bp.add_route(page, "", methods=["GET"], name="console_page")
bp.add_route(asset, "/<name:str>", methods=["GET"], name="console_asset")
