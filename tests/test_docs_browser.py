"""/docs in headless Chromium with no way out: every request for another host is aborted and
recorded, and the page must still list the API's operations.

The browser reaches the server as `http://simbridge.test:<port>` (Chromium maps the name to
127.0.0.1), as a relay on a LAN is reached: Swagger UI shows its validator badge (an image from
validator.swagger.io) only for a page that is not on localhost or 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from simbridge.config import Settings
from tests.helpers import LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = Path("/usr/bin/chromium")
SERVER_NAME = "simbridge.test"
PAGE_TIMEOUT_MS = 15_000


def unavailable(reason: str) -> NoReturn:
    """Skip, saying how to get a browser; in CI (CI=true) fail instead."""
    message = f"{reason}: `apt-get install -y chromium` and `pip install -e '.[test]'`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def docs_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """The `server` fixture's server, in this module's event loop (the browser's)."""
    async with LiveServer.running(settings) as live:
        yield live


async def test_docs_list_the_operations_with_no_request_leaving_the_server(
    browser: Any, docs_server: LiveServer
) -> None:
    port = urlsplit(docs_server.url).port
    origin = f"{SERVER_NAME}:{port}"
    elsewhere: list[str] = []

    async def only_this_server(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == origin:
            await route.continue_()
        else:
            elsewhere.append(url)
            await route.abort()

    async with httpx.AsyncClient(base_url=docs_server.url) as http:
        spec = (await http.get("/docs/openapi.json")).json()
    operations = [op for ops in spec["paths"].values() for op in ops.values()]

    page = await browser.new_page()
    errors: list[str] = []  # a script that failed, or anything the page's CSP refused
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.route("**/*", only_this_server)
        await page.goto(f"http://{origin}/docs", wait_until="networkidle")
        assert (elsewhere, errors) == ([], [])  # the page and its own files loaded
        blocks = page.locator(".opblock")
        await blocks.nth(len(operations) - 1).wait_for(timeout=PAGE_TIMEOUT_MS)
        assert await blocks.count() == len(operations)
        for shown in ("send_sms", "Ask your host to send an SMS (`SEND_SMS`).", "/pair/confirm"):
            await page.get_by_text(shown, exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        await page.wait_for_load_state("networkidle")
    finally:
        await page.close()
    assert elsewhere == []  # and nothing the rendered page asked for (a validator badge)
    assert errors == []
