"""The browser console at /console, end to end: a real server, Debian's Chromium driven by
playwright, and the device simulator (`SimulatedHost`) as the host phone, on a real socket.

A person registers, the page becomes a client device ("Browser console"), adds a host, pairs
itself with it through a pairing code, sends an SMS and sees SMS_SENT in the live feed, asks
for the SIMs, places a call, and sees the host go offline. Throughout, no request leaves the
server and no credential is in any URL the page asks for. The browser and the server live as
long as this module (one event loop for both); every test has its own account and context.

Where Chromium or playwright is missing the browser tests skip (they fail with CI=true).
Screenshots of failed tests go to pytest's tmp path (the path is printed). With
SIMBRIDGE_SCREENSHOT=docs/console.png the end-to-end test writes the docs' screenshot there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from simbridge.config import Settings
from simbridge.simulator import phone
from simbridge.simulator.account import Login
from simbridge.simulator.host import SimulatedHost
from tests.conftest import TEST_SECRET
from tests.helpers import (
    PASSWORD,
    Account,
    Device,
    LiveServer,
    assert_error,
    handshake,
    make_account,
    make_device,
    make_device_with_token,
    pair_devices,
)

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Page,
        WebSocketRoute,
        async_playwright,
    )
except ImportError:  # the browser tests skip (or fail with CI=true) below
    async_playwright = None

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = Path("/usr/bin/chromium")
HOWTO = "install Debian's browser (apt-get install -y chromium) and pip install playwright"
TIMEOUT_MS = 5000
SCREENSHOT_ENV = "SIMBRIDGE_SCREENSHOT"
# In no URL: a query token, a subprotocol-style bearer, a device token, a JWT (`{"` in base64)
CREDENTIAL_MARKS = ("token=", "bearer", "sbd_", "eyJ")
# What Chromium logs for an API error reply (a wrong password's 401): the page shows it itself
ANSWERED_WITH_ERROR = re.compile(
    r"Failed to load resource: the server responded with a status of 4\d\d"
)


# --- the module's server and browser ----------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """One server for the module (the `settings` fixture's knobs, with the real clock): the
    browser lives in the module's event loop, and the server must share it."""
    settings = Settings(
        jwt_secret=TEST_SECRET,
        db_path=str(tmp_path_factory.mktemp("console") / "simbridge.db"),
        bcrypt_rounds=4,
        gc_freeze=False,
        log_flush_seconds=0.005,
        graceful_shutdown_seconds=2.0,
    )
    async with LiveServer.running(settings) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def rest(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        yield client


def _missing_browser() -> str | None:
    if async_playwright is None:
        return f"playwright is not installed; {HOWTO}"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; {HOWTO}"
    return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:  # type: ignore[misc]
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@dataclass
class Traffic:
    """Every URL the page asked for (HTTP and WebSocket), those that were not the server's,
    and what went wrong in the page (a CSP violation is logged as a console error)."""

    urls: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors


@dataclass
class Console:
    page: Page
    context: BrowserContext
    traffic: Traffic
    server: LiveServer

    async def open(self) -> None:
        await self.page.goto(f"{self.server.url}/console")

    async def sign_in(self, account: Account, *, wait_live: bool = True) -> None:
        await self.open()
        await self.page.fill("#auth-form [name=username]", account.username)
        await self.page.fill("#auth-form [name=password]", account.password)
        await self.page.click("#auth-submit")
        if wait_live:
            await self.live()
        else:  # signed in; its socket may be anything
            await self.page.wait_for_selector("#app-view:not([hidden])", timeout=TIMEOUT_MS)

    async def set_knobs(self, **knobs: float) -> None:
        """link.js's test knobs (retry delays, stable time, refusals before a check), set
        before the page's own scripts run at its next load."""
        await self.page.add_init_script(f"globalThis.simbridgeConsoleKnobs = {json.dumps(knobs)};")

    async def banner(self, text: str) -> Any:
        banner = self.page.locator("#banner").filter(has_text=text)
        await banner.wait_for(timeout=TIMEOUT_MS)
        return banner

    async def live(self) -> None:
        """Wait for the console's own socket to be greeted."""
        await self.page.wait_for_selector("#status[data-state=live]", timeout=TIMEOUT_MS)

    def entries(self, event: str) -> Any:
        return self.page.locator(f"#feed .entry[data-event='{event}']")

    async def wait_entry(self, event: str, text: str = "") -> Any:
        entry = self.entries(event).filter(has_text=text).first
        await entry.wait_for(timeout=TIMEOUT_MS)
        return entry

    def device_row(self, name: str) -> Any:
        return self.page.locator("#devices .device").filter(has_text=name)


@pytest_asyncio.fixture(loop_scope="module")
async def console(
    browser: Browser, live: LiveServer, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Console]:
    """A fresh browser context on /console's server; requests to anywhere else are recorded and
    aborted. A failed test leaves a screenshot in its tmp path. At teardown, the test fails if
    the page reported an error, asked for anything outside the server, or put what looks like
    a credential in a URL (HTTP or WebSocket)."""
    server_host = urlsplit(live.url).netloc
    traffic = Traffic()

    async def guard(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc != server_host:
            traffic.outside.append(url)
            await route.abort()
        else:
            await route.continue_()

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.route("**/*", guard)
    context.on("request", lambda sent: traffic.urls.append(sent.url))
    page = await context.new_page()
    page.on("websocket", lambda ws: traffic.urls.append(ws.url))
    page.on("pageerror", lambda error: traffic.errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            traffic.errors.append(message.text)
            if message.type == "error" and not ANSWERED_WITH_ERROR.match(message.text)
            else None
        ),
    )
    failures_before = request.session.testsfailed
    yield Console(page, context, traffic, live)
    # The call's report is counted before teardown: a rise means this test failed.
    if request.session.testsfailed > failures_before:
        shot = tmp_path / "failure.png"
        await page.screenshot(path=str(shot), full_page=True)
        report(f"screenshot of the failed console: {shot}")
    await context.close()
    assert traffic.errors == [], "the page reported errors"
    assert traffic.outside == [], "the page asked for something outside the server"
    for url in traffic.urls:
        for credential in CREDENTIAL_MARKS:
            assert credential not in url, url


def report(line: str) -> None:
    """A figure or a file for the person running the tests (seen with -s, or on failure)."""
    print(f"\n{line}", flush=True)  # noqa: T201


# --- a host phone ------------------------------------------------------------------------------
@asynccontextmanager
async def simulated_phone(server: LiveServer, owner: Account, host_id: int) -> AsyncIterator[Phone]:
    """`simbridge simulate host` in-process on `owner`'s host, answering at once; its socket
    closes when the block ends."""
    lines: list[str] = []
    login = Login(server.url, owner.username, owner.password)
    async with SimulatedHost(login, device_id=host_id, answer_delay=0, output=lines.append) as host:
        yield Phone(host, lines)


@dataclass
class Phone:
    host: SimulatedHost
    lines: list[str]  # what it printed: `< frame` received, `> frame` sent, `# note`

    @property
    def commands(self) -> list[dict[str, Any]]:
        received = [json.loads(line[2:]) for line in self.lines if line.startswith("< ")]
        return [frame for frame in received if frame.get("type") == "command"]


# --- the page, its headers and its files ---------------------------------------------------------
def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


async def test_console_is_served_with_a_strict_content_security_policy(
    rest: httpx.AsyncClient,
) -> None:
    page = await rest.get("/console")
    with_slash = await rest.get("/console/")

    assert page.status_code == 200 and with_slash.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == with_slash.text and '<script type="module"' in page.text
    policy = csp_directives(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    every_source = " ".join(source for sources in policy.values() for source in sources)
    for loose in ("unsafe-inline", "unsafe-eval", "http:", "https:", "*", "data:"):
        assert loose not in every_source, every_source
    assert page.headers["x-frame-options"] == "DENY"


async def test_console_assets_are_revalidated_by_etag(rest: httpx.AsyncClient) -> None:
    script = await rest.get("/console/console.js")
    again = await rest.get("/console/console.js", headers={"If-None-Match": script.headers["etag"]})
    missing = await rest.get("/console/nothing.js")
    outside = await rest.get("/console/..%2Fapp.py")

    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "no-cache"
    assert "content-security-policy" in script.headers
    assert again.status_code == 304 and again.content == b""
    assert_error(missing, 404)
    assert outside.status_code == 404


async def test_console_is_left_out_of_the_api_description(rest: httpx.AsyncClient) -> None:
    spec = (await rest.get("/docs/openapi.json")).json()

    assert not [path for path in spec["paths"] if path.startswith("/console")]


# --- the socket's Origin ----------------------------------------------------------------------
async def test_socket_opens_from_the_servers_own_origin_only(
    live: LiveServer, rest: httpx.AsyncClient
) -> None:
    """The console's origin is the server's: its socket opens with no setting. Every other
    origin is refused as before, the same host on another port too."""
    owner = await make_account(rest, "origin_check")
    host, _ = await make_device_with_token(rest, owner, "host")
    own = live.url  # http://127.0.0.1:PORT, which is also the handshake's Host
    other_port = re.sub(r":(\d+)$", lambda port: f":{int(port[1]) + 1}", own)

    assert (await handshake(live, host, owner.token, "subprotocol", origin=own)).status == 101
    for foreign in ("https://evil.example", other_port, "null", "ws://" + urlsplit(own).netloc):
        refused = await handshake(live, host, owner.token, "subprotocol", origin=foreign)
        assert_error(refused.reply, 403)


# --- the console in Chromium --------------------------------------------------------------------
async def test_console_pairs_sends_and_follows_a_host(
    console: Console, live: LiveServer, rest: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = console.page
    await console.open()
    first_paint = await page.evaluate(
        "performance.getEntriesByType('paint').map(e => [e.name, e.startTime])"
    )

    # Create an account from the page; it becomes a client device with its own socket.
    await page.click("#tab-register")
    await page.fill("#auth-form [name=username]", "carol")
    await page.fill("#auth-form [name=password]", PASSWORD)
    await page.click("#auth-submit")
    await console.live()
    carol = Account("carol", PASSWORD, 0, "")
    session = json.loads(await page.evaluate("sessionStorage.getItem('simbridge.session')"))
    carol.token, carol.user_id = session["token"], session["userId"]
    await console.device_row("Browser console").wait_for(timeout=TIMEOUT_MS)

    # A host, added from the page: its device token is shown once, for the phone app.
    await page.fill("#device-form [name=name]", "Office phone")
    await page.select_option("#device-form [name=type]", "host")
    await page.click("#device-form button[type=submit]")
    await page.wait_for_selector("#new-token-value", timeout=TIMEOUT_MS)  # visible
    host_token = await page.locator("#new-token-value").inner_text()
    assert host_token.startswith("sbd_")
    await page.click("#new-token-close")
    await console.device_row("Office phone").wait_for(timeout=TIMEOUT_MS)
    host_id = int(await console.device_row("Office phone").get_attribute("data-device-id"))

    # Pair the console with it: a code from the host's row, confirmed in the pairing form.
    await console.device_row("Office phone").get_by_role("button", name="Pairing code").click()
    code = await console.device_row("Office phone").locator(".code").inner_text()
    assert re.fullmatch(r"\d{6}", code)
    assert await page.input_value("#pair-form [name=code]") == code
    await page.select_option("#pair-client", label="This console")
    await page.click("#pair-form button[type=submit]")
    await console.wait_entry("paired", "Office phone paired with this console")
    pairings = (await rest.get("/pairings", headers=carol.headers)).json()
    assert [p["host_device_id"] for p in pairings] == [host_id]
    await console.live()

    async with simulated_phone(live, carol, host_id) as office:
        await page.wait_for_selector(
            f"#devices .device[data-device-id='{host_id}'][data-online=true]", timeout=TIMEOUT_MS
        )
        latencies = await feed_latencies(console, office)
        await page.click("#feed-clear")

        # An SMS from the form reaches the host, and its SMS_SENT reaches the feed.
        await page.fill("#sms-form [name=to]", "+886912345678")
        await page.fill("#sms-form [name=body]", "Meeting moved to 3 pm")
        await page.click("#sms-form button[type=submit]")
        await console.wait_entry("SMS_SENT", "+886912345678")
        sms = office.commands[-1]
        assert (sms["cmd"], sms["to"], sms["body"], sms["sim"]) == (
            "SEND_SMS",
            "+886912345678",
            "Meeting moved to 3 pm",
            1,
        )

        await page.click("#ask-sims")
        await console.wait_entry("SIM_INFO", "SimBridge Mobile")
        assert await page.locator("#sims li").count() == 2

        await page.click("#tab-call")
        await page.fill("#call-form [name=to]", "+886223456789")
        await page.click("#call-form button[type=submit]")
        await console.wait_entry("CALL_STATE", "Call ended")
        assert office.commands[-1]["cmd"] == "MAKE_CALL"

        office.host.inject(phone.incoming_sms("+886987654321", "Running 10 minutes late!", sim=2))
        await console.wait_entry("INCOMING_SMS", "Running 10 minutes late")
        await page.click("#tab-sms")
        await save_screenshot(page, tmp_path)

    # The host hangs up: the console shows it offline, live.
    await page.wait_for_selector(
        f"#devices .device[data-device-id='{host_id}'][data-online=false]", timeout=TIMEOUT_MS
    )
    await console.wait_entry("presence", "Office phone is offline")

    # While it is away an SMS is queued for it (the default), to be sent once it is back.
    await page.fill("#sms-form [name=to]", "+886900000000")
    await page.fill("#sms-form [name=body]", "Call me back")
    await page.click("#sms-form button[type=submit]")
    await console.wait_entry("queued", "Office phone is offline: sent when it is back")

    # When the phone is back, the queued SMS reaches it (once), and its answer the feed.
    async with simulated_phone(live, carol, host_id) as office:
        await console.wait_entry("SMS_SENT", "+886900000000")
        assert [(c["cmd"], c["to"], c["body"]) for c in office.commands] == [
            ("SEND_SMS", "+886900000000", "Call me back")
        ]

    socket_urls = [url for url in console.traffic.urls if url.startswith("ws")]
    assert socket_urls and all("/ws/client/" in url for url in socket_urls), socket_urls
    for url in console.traffic.urls:  # and the fixture's checks at teardown
        assert carol.token not in url and host_token not in url, url
    report(f"console first paint (ms after navigation start): {first_paint}")
    for what, figures in latencies.items():
        report(
            f"console feed latency, host sends -> {what}, {len(figures)} events: "
            f"median {statistics.median(figures):.1f} ms, max {max(figures):.1f} ms"
        )


LATENCY_SAMPLES = 20


async def feed_latencies(console: Console, office: Phone) -> dict[str, list[float]]:
    """Milliseconds from a host raising an event (wall clock, taken just before it) to the
    page receiving it (noted by its socket handler) and to the frame that shows it in the feed
    (noted in the next animation frame): the page's wall clock, this machine's as well. One
    event at a time, each waited for in the feed."""
    latencies: dict[str, list[float]] = {"page receipt": [], "feed entry shown": []}
    for number in range(LATENCY_SAMPLES):
        body = f"latency probe {number}"
        sent_at = time.time() * 1000
        office.host.inject(phone.incoming_sms("+15550100", body))
        entry = await console.wait_entry("INCOMING_SMS", body)
        await entry.and_(console.page.locator("[data-shown-at]")).wait_for(timeout=TIMEOUT_MS)
        received_at = float(await entry.get_attribute("data-received-at"))
        shown_at = float(await entry.get_attribute("data-shown-at"))
        latencies["page receipt"].append(received_at - sent_at)
        latencies["feed entry shown"].append(shown_at - sent_at)
    return latencies


async def save_screenshot(page: Page, tmp_path: Path) -> None:
    """The docs' screenshot when SIMBRIDGE_SCREENSHOT names a file; a tmp one otherwise."""
    target = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "console.png")
    await page.locator("#feed-clear").focus()
    await page.screenshot(path=str(target), full_page=True)
    report(f"console screenshot: {target}")


async def test_console_fits_a_phone_screen(console: Console, rest: httpx.AsyncClient) -> None:
    dave = await make_account(rest, "dave")
    await console.page.set_viewport_size({"width": 390, "height": 844})

    await console.sign_in(dave)

    width = await console.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    for form in ("#sms-form", "#device-form", "#pair-form"):
        box = await console.page.locator(form).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (form, box)


async def test_console_signs_out_and_back_in(console: Console, rest: httpx.AsyncClient) -> None:
    """Signing out forgets the account token; signing in again reuses the same console device
    (its id remembered in the browser) with a fresh device token."""
    erin = await make_account(rest, "erin")
    await console.sign_in(erin)
    await console.page.click("#logout")
    await console.page.wait_for_selector("#auth-view:not([hidden])", timeout=TIMEOUT_MS)
    assert await console.page.evaluate("sessionStorage.getItem('simbridge.session')") is None

    await console.sign_in(erin)

    devices = (await rest.get("/devices", headers=erin.headers)).json()
    assert [(d["name"], d["type"]) for d in devices] == [("Browser console", "client")]
    assert devices[0]["is_online"] is True


async def test_a_second_tab_takes_the_console_over(
    console: Console, rest: httpx.AsyncClient
) -> None:
    """Two tabs of one browser are one console device: the tab that starts last gets a fresh
    device token, the other is told and can take it back; neither reconnects in a loop."""
    frank = await make_account(rest, "frank")
    await console.sign_in(frank)
    second = Console(
        await console.context.new_page(), console.context, console.traffic, console.server
    )

    await second.sign_in(frank)

    first_banner = console.page.locator("#banner")
    await first_banner.filter(has_text="open in another tab").wait_for(timeout=TIMEOUT_MS)
    assert await console.page.get_attribute("#status", "data-state") == "offline"
    await first_banner.get_by_role("button", name="Use it here").click()
    await console.live()
    await (
        second.page.locator("#banner")
        .filter(has_text="open in another tab")
        .wait_for(timeout=TIMEOUT_MS)
    )
    devices = (await rest.get("/devices", headers=frank.headers)).json()
    assert [(d["name"], d["is_online"]) for d in devices] == [("Browser console", True)]


async def test_console_replays_what_came_while_it_was_closed(
    console: Console, live: LiveServer, rest: httpx.AsyncClient
) -> None:
    """A wrong password is told as such. Once signed in, the tab keeps its session across a
    reload, and an SMS that reached the account while the page was closed is in the feed when
    it opens again, marked as such (the socket's `since`)."""
    gina = await make_account(rest, "gina")
    await console.open()
    await console.page.fill("#auth-form [name=username]", gina.username)
    await console.page.fill("#auth-form [name=password]", "not-her-password")
    await console.page.click("#auth-submit")
    await console.page.wait_for_selector("#auth-error:not([hidden])", timeout=TIMEOUT_MS)
    await console.sign_in(gina)
    [console_row] = (await rest.get("/devices", headers=gina.headers)).json()
    host = await make_device(rest, gina, "host", "Home phone")
    await pair_devices(rest, gina, host, Device(console_row["id"], "client", gina))

    async with simulated_phone(live, gina, host.id) as home:
        await console.page.goto("about:blank")
        home.host.inject(phone.incoming_sms("+886955555555", "Dinner at 7?"))
        await console.open()  # no sign-in: the tab's session is still there
        await console.live()
        missed = await console.wait_entry("INCOMING_SMS", "Dinner at 7?")
        assert "SMS from +886955555555 (while you were away)" in await missed.inner_text()


# --- the console's socket when the relay misbehaves (playwright routes the page's sockets) ------
CONSOLE_SOCKETS = re.compile(r"/ws/client/\d+")


def greeting(seq: int = 0) -> str:
    return json.dumps({"type": "connected", "device_id": 0, "seq": seq})


def bearer_of(ws: WebSocketRoute) -> str:
    """The device token a console socket offered (its `bearer.<token>` subprotocol)."""
    [token] = [p.removeprefix("bearer.") for p in ws.protocols if p.startswith("bearer.")]
    return token


async def test_a_relay_that_greets_then_closes_is_not_hammered(
    console: Console, rest: httpx.AsyncClient
) -> None:
    """A relay that greets the console and closes its socket at once (1011) makes the page back
    off as from any other drop: the shortest delay comes back only once a socket has stayed up
    `stableMs` (10 s in a real page). One that did, then dropped, is reopened at once."""
    ivan = await make_account(rest, "ivan")
    await console.set_knobs(retryFirstMs=50, retryMaxMs=1600, stableMs=400)
    opened: list[float] = []
    sockets: list[WebSocketRoute] = []
    greet_and_close = True

    async def relay(ws: WebSocketRoute) -> None:
        opened.append(time.monotonic())
        sockets.append(ws)
        ws.send(greeting())
        if greet_and_close:
            await ws.close(code=1011, reason="going away")

    await console.page.route_web_socket(CONSOLE_SOCKETS, relay)
    await console.sign_in(ivan, wait_live=False)
    await asyncio.sleep(1.5)

    # Backing off: at least 25+50+100+200+400+800 ms of waits before the 7th socket (at the
    # shortest delay, 25-50 ms each, 1.5 s would see 30 sockets and more).
    assert 2 <= len(opened) <= 8, len(opened)
    greet_and_close = False
    closed_ones = len(opened)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while len(opened) == closed_ones and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await console.live()
    await asyncio.sleep(0.6)  # stable
    before = len(opened)
    dropped_at = time.monotonic()
    await sockets[-1].close(code=1011, reason="going away")
    await console.live()
    assert len(opened) == before + 1
    assert opened[-1] - dropped_at < 0.5, opened[-1] - dropped_at  # 25-50 ms, not 800-1600


async def test_a_takeover_close_is_not_reopened(console: Console, rest: httpx.AsyncClient) -> None:
    """Closed with 4000 (another tab, or this page reloaded elsewhere, took the device's socket
    over), the console does not reconnect: it says so and offers to take the device back."""
    judy = await make_account(rest, "judy")
    await console.set_knobs(retryFirstMs=50)
    opened: list[WebSocketRoute] = []

    async def relay(ws: WebSocketRoute) -> None:
        opened.append(ws)
        if len(opened) == 1:
            ws.send(greeting())
            await ws.close(code=4000, reason="replaced")
        else:
            ws.connect_to_server()

    await console.page.route_web_socket(CONSOLE_SOCKETS, relay)
    await console.sign_in(judy, wait_live=False)

    banner = await console.banner("open in another tab")
    await asyncio.sleep(0.5)
    assert len(opened) == 1
    assert await console.page.get_attribute("#status", "data-state") == "offline"
    await banner.get_by_role("button", name="Use it here").click()
    await console.live()
    assert len(opened) == 2


async def test_console_adopts_the_relays_seq_when_it_went_back(
    console: Console, live: LiveServer, rest: httpx.AsyncClient
) -> None:
    """A relay that lost what it kept (in-memory state, restarted) greets with a seq below the
    since the page remembers. The page takes the greeting's seq as its since, and says that older
    events are gone: an SMS the relay keeps for it afterwards is replayed at its next open, not
    skipped as already seen (contract §6)."""
    kate = await make_account(rest, "kate")
    await console.sign_in(kate)
    [console_row] = (await rest.get("/devices", headers=kate.headers)).json()
    host = await make_device(rest, kate, "host", "Shop phone")
    await pair_devices(rest, kate, host, Device(console_row["id"], "client", kate))
    key = f"simbridge.console.{kate.user_id}"
    remembered = json.loads(await console.page.evaluate(f"localStorage.getItem('{key}')"))
    remembered["seq"] = 50  # seen before the relay's restart
    await console.page.evaluate(f"localStorage.setItem('{key}', '{json.dumps(remembered)}')")

    await console.open()
    await console.live()

    await console.wait_entry("gap", "started afresh")
    assert json.loads(await console.page.evaluate(f"localStorage.getItem('{key}')"))["seq"] == 0
    async with simulated_phone(live, kate, host.id) as shop:
        await console.page.goto("about:blank")
        shop.host.inject(phone.incoming_sms("+886911111111", "Open at 9 tomorrow"))
        await console.open()
        await console.live()
        missed = await console.wait_entry("INCOMING_SMS", "Open at 9 tomorrow")
        assert "(while you were away)" in await missed.inner_text()
    socket_urls = [url for url in console.traffic.urls if url.startswith("ws")]
    assert "since=50" in socket_urls[-2] and "since=0" in socket_urls[-1], socket_urls


async def test_console_with_a_dead_token_asks_the_api_then_recovers_or_stops(
    console: Console, rest: httpx.AsyncClient
) -> None:
    """A refused handshake (401 for a rotated token, 404 for a deleted device) reaches a page
    as a plain drop (1006). After three in a row the console asks `GET /devices`: its device
    there and offline (its token was rotated while its socket was down), it takes a fresh token
    and is live again; its device gone, it stops and says so."""
    liam = await make_account(rest, "liam")
    await console.set_knobs(retryFirstMs=50, retryMaxMs=200)
    dead: set[str] = set()  # tokens the relay refuses
    offered: list[str] = []

    async def relay(ws: WebSocketRoute) -> None:
        token = bearer_of(ws)
        offered.append(token)
        if token in dead:
            await ws.close(code=1006)  # what a refused handshake is to the page
            return
        server = ws.connect_to_server()

        async def dropped(code: int | None, reason: str | None) -> None:
            await ws.close(code=1006)  # the network went: the page never sees the relay's code

        server.on_close(dropped)

    await console.page.route_web_socket(CONSOLE_SOCKETS, relay)
    await console.sign_in(liam)
    [row] = (await rest.get("/devices", headers=liam.headers)).json()

    dead.add(offered[-1])
    rotated = await rest.post(f"/devices/{row['id']}/token", headers=liam.headers)
    assert rotated.status_code == 200
    await console.page.wait_for_selector("#status[data-state=offline]", timeout=TIMEOUT_MS)
    await console.live()
    assert offered[-1] not in dead and offered.count(offered[-2]) >= 3

    dead.add(offered[-1])
    deleted = await rest.delete(f"/devices/{row['id']}", headers=liam.headers)
    assert deleted.status_code == 200
    await console.banner("device was deleted")
    attempts = len(offered)
    await asyncio.sleep(0.5)
    assert len(offered) == attempts
    assert await console.page.get_attribute("#status", "data-state") == "offline"
