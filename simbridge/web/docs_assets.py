"""Swagger UI at /docs from this server alone: its files from the `swagger-ui-bundle` package,
so the API docs work where no CDN can be reached (a relay on a LAN, a strict egress policy), and
a Content-Security-Policy that lets the page load nothing from elsewhere.

sanic-ext's Swagger page loads `{OAS_UI_SWAGGER_CDN_URL}/{OAS_UI_SWAGGER_VERSION}/<name>`, where
`<name>` is a minified build's name; the package ships those builds minified under the plain
names, so `ASSETS` maps one to the other and serves nothing else.
"""

from __future__ import annotations

import re
from base64 import b64encode
from functools import lru_cache
from hashlib import sha256
from pathlib import Path

from sanic import Blueprint, Request
from sanic.response import BaseHTTPResponse, HTTPResponse, file
from sanic_ext.extensions.openapi import openapi
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from simbridge.errors import NotFound
from simbridge.web.context import SimBridgeApp

SWAGGER_UI_DIR = Path(str(swagger_ui_path))
SWAGGER_UI_VERSION = SWAGGER_UI_DIR.name.removeprefix("swagger-ui-")  # "4.15.5"
ASSETS_URL = "/docs/assets/swagger-ui"  # OAS_UI_SWAGGER_CDN_URL

JS = "text/javascript; charset=utf-8"
# The name sanic-ext's page asks for: the package's file, and its content type.
ASSETS = {
    "swagger-ui-bundle.min.js": ("swagger-ui-bundle.js", JS),
    "swagger-ui-standalone-preset.min.js": ("swagger-ui-standalone-preset.js", JS),
    "swagger-ui.min.css": ("swagger-ui.css", "text/css; charset=utf-8"),
}
ONE_YEAR = 365 * 24 * 3600  # the version is in the path: a file under it never changes

# sanic-ext's page starts Swagger UI from an inline script, allowed by its hash; Swagger UI sets
# inline styles and draws icons from data: URIs.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

bp = Blueprint("docs_assets", url_prefix=ASSETS_URL)


@bp.get(f"/{SWAGGER_UI_VERSION}/<name:str>")
@openapi.exclude()
async def swagger_ui_asset(request: Request, name: str) -> HTTPResponse:
    if name not in ASSETS:
        raise NotFound("No such file")
    filename, content_type = ASSETS[name]
    path = SWAGGER_UI_DIR / filename
    return await file(
        path, request_headers=request.headers, mime_type=content_type, max_age=ONE_YEAR
    )


async def oauth2_redirect_page(request: Request) -> HTTPResponse:
    """sanic-ext's `/docs/oauth2-redirect.html` fetches this page from a CDN on each first
    request (a 500 when offline); the package ships it."""
    return await file(SWAGGER_UI_DIR / "oauth2-redirect.html", mime_type="text/html")


@lru_cache(maxsize=8)
def page_policy(page: bytes) -> str:
    """The policy of a page, its inline scripts allowed by hash; a few pages, each the same on
    every request, so each is hashed once."""
    scripts = INLINE_SCRIPT.findall(page)
    hashes = " ".join(
        f"'sha256-{b64encode(sha256(script).digest()).decode()}'" for script in scripts
    )
    return PAGE_POLICY.format(scripts=hashes)


async def add_page_policy(request: Request, response: BaseHTTPResponse) -> None:
    response.headers["Content-Security-Policy"] = page_policy(response.body or b"")


def serve_swagger_ui(app: SimBridgeApp) -> None:
    """Serve the Swagger UI files and the page's policy; after `app.extend`, which adds the
    docs routes."""
    app.blueprint(bp)
    routes = f"{app.name}.openapi"
    # Middleware that answers ends the request before sanic-ext's handler runs.
    app.register_named_middleware(oauth2_redirect_page, route_names=[f"{routes}.oauth2-redirect"])
    pages = [f"{routes}.index", f"{routes}.swagger", f"{routes}.oauth2-redirect"]
    app.register_named_middleware(add_page_policy, route_names=pages, attach_to="response")
