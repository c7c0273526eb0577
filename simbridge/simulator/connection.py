"""One device's socket, kept open: reconnects with capped exponential backoff and jitter, and
resumes where it left off (contract §6).

The socket is opened with `since`, so every frame the device is handed carries a `seq`; the
link remembers the latest and reconnects with `since=<latest>`, so the server replays only what
was missed while away (and then the commands queued for it, §7), never what was already
handled. The first connection asks for nothing older than itself (`since` beyond every seq):
frames kept from before the simulator started were handled by whoever held the device then.
A server that keeps no frames refuses `since` with 400; the link then connects without it.

Frames to send wait in an outbox while the socket is down and go out, in order, once it is back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from simbridge.simulator.account import DeviceAccess, SimulatorError

Frame = dict[str, Any]
Output = Callable[[str], None]
Handler = Callable[[Frame], Awaitable[None]]

FROM_NOW = 2**63 - 1  # a `since` beyond every seq: replay nothing (the greeting tells the latest)
OUTBOX_LIMIT = 1000  # frames waiting for the socket; the oldest go first
OPEN_TIMEOUT_SECONDS = 10.0
# Closes after which reconnecting would be wrong: another socket took the device over, its
# token was revoked, it was deleted.
FINAL_CLOSES = {
    4000: "another connection took this device over",
    4001: "its token was revoked",
    4002: "the device was deleted",
}
FINAL_STATUSES = {
    401: "the device token was refused",
    403: "refused (wrong device type?)",
    404: "the device does not exist",
}


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: doubling from `first` up to `cap` seconds, each
    drawn between half and all of that ("equal jitter", so devices dropped together spread out
    but none retries at once); `attempts` failures in a row end the link.

    A connection is a success only once it has stayed up `stable` seconds after its greeting:
    one closed sooner (a server that greets and then drops it at once) is a failure like a
    refused dial, so the waits keep growing instead of redialling at the shortest forever."""

    first: float = 0.5
    cap: float = 30.0
    attempts: int = 20
    stable: float = 10.0

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** min(attempt - 1, 32))
        return ceiling / 2 + draw() * ceiling / 2


DEFAULT_BACKOFF = Backoff()


def compact(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"))


class Link:
    """The socket of `device` at `ws_url`, kept open by `run` until its stop event is set."""

    def __init__(
        self,
        ws_url: str,
        device: DeviceAccess,
        output: Output,
        backoff: Backoff,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self._url = f"{ws_url}/ws/{device.kind}/{device.device_id}"
        self._token = device.token
        self._output = output
        self._backoff = backoff
        self._since_supported = True
        self.latest_seq: int | None = None  # the latest seq handed to this device, once known
        self.connected = asyncio.Event()  # set while a socket is open and greeted
        self._clock = clock
        self._greeted_at: float | None = None  # when the current socket was greeted
        self._outbox: deque[Frame] = deque()
        self._queued = asyncio.Event()
        self._ws: ClientConnection | None = None

    def send(self, frame: Frame) -> None:
        """Send `frame` now, or as soon as the socket is back."""
        if len(self._outbox) >= OUTBOX_LIMIT:
            dropped = self._outbox.popleft()
            self._output(f"# outbox full, dropped {compact(dropped)}")
        self._outbox.append(frame)
        self._queued.set()

    async def run(self, handle: Handler, stop: asyncio.Event) -> None:
        """Keep the socket open and hand every frame received to `handle`, until `stop` is set.
        Raises `SimulatorError` when reconnecting cannot help, or after `backoff.attempts`
        failures in a row."""
        watcher = asyncio.create_task(self._close_on(stop))
        try:
            failures = 0
            while not stop.is_set():
                reason = await self._session(handle, stop)
                if self._stayed_up():
                    failures = 0  # it was up long enough: count afresh
                self.connected.clear()
                if stop.is_set():
                    break
                failures += 1
                if failures > self._backoff.attempts:
                    raise SimulatorError(f"gave up after {failures - 1} attempts: {reason}")
                delay = self._backoff.delay(failures)
                self._output(f"# disconnected ({reason}); reconnecting in {delay:.2f} s")
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            watcher.cancel()

    async def _session(self, handle: Handler, stop: asyncio.Event) -> str:
        """One connection, from dialling to its end; returns why it ended."""
        try:
            async with connect(
                self._dial_url(),
                additional_headers={"Authorization": f"Bearer {self._token}"},
                open_timeout=OPEN_TIMEOUT_SECONDS,
                close_timeout=2,
            ) as ws:
                self._ws = ws
                if stop.is_set():  # set while dialling: the watcher saw no socket
                    await ws.close()
                writer = asyncio.create_task(self._write(ws))
                try:
                    async for raw in ws:
                        await self._receive(raw, handle)
                finally:
                    writer.cancel()
                    self._ws = None
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status in FINAL_STATUSES:
                raise SimulatorError(f"{self._url}: {FINAL_STATUSES[status]} ({status})") from None
            if status == 400 and self._since_supported:
                self._since_supported = False
                self._output("# the server keeps no frames (since refused): connecting without")
            return f"handshake answered {status}"
        except ConnectionClosed as closed:
            return self._closed(closed)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if ws.close_code in FINAL_CLOSES:
            raise SimulatorError(f"closed with {ws.close_code}: {FINAL_CLOSES[ws.close_code]}")
        return f"closed with {ws.close_code}"

    def _stayed_up(self) -> bool:
        """Whether the connection that just ended was greeted and then up `backoff.stable`
        seconds (see `Backoff`)."""
        greeted_at, self._greeted_at = self._greeted_at, None
        return greeted_at is not None and self._clock() - greeted_at >= self._backoff.stable

    def _closed(self, closed: ConnectionClosed) -> str:
        code = closed.rcvd.code if closed.rcvd is not None else None
        if code in FINAL_CLOSES:
            raise SimulatorError(f"closed with {code}: {FINAL_CLOSES[code]}") from None
        return f"closed with {code}"

    def _dial_url(self) -> str:
        if not self._since_supported:
            return self._url
        since = FROM_NOW if self.latest_seq is None else self.latest_seq
        return f"{self._url}?since={since}"

    async def _receive(self, raw: str | bytes, handle: Handler) -> None:
        text = raw if isinstance(raw, str) else raw.decode(errors="replace")
        self._output(f"< {text}")
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        seq = frame.get("seq")
        if frame.get("type") == "connected":
            self._greeted(seq)
        elif _is_seq(seq):
            self.latest_seq = max(seq, self.latest_seq or 0)
        await handle(frame)

    def _greeted(self, seq: Any) -> None:
        """The greeting's `seq` is the latest the server has assigned to the device (§6). The
        first greeting sets where the link starts: everything up to it is skipped. A later one
        below ours means the server lost its count (restarted with an in-memory registry, its
        inbox gone) and numbers afresh from there: resuming from our higher seq would skip
        every new frame numbered below it."""
        if _is_seq(seq):
            if self.latest_seq is None:
                self.latest_seq = seq
            elif seq < self.latest_seq:
                self._output(
                    f"# the server's latest seq {seq} is below ours ({self.latest_seq}): "
                    f"it lost its count; resuming from {seq}"
                )
                self.latest_seq = seq
        self._greeted_at = self._clock()
        self.connected.set()

    async def _write(self, ws: ClientConnection) -> None:
        """Once greeted, send the outbox in order; a frame leaves it once the socket took it."""
        await self.connected.wait()
        while True:
            while self._outbox:
                text = compact(self._outbox[0])
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    return  # the reader sees the close too; the frame waits for the next socket
                self._outbox.popleft()
                self._output(f"> {text}")
            self._queued.clear()
            await self._queued.wait()

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._ws is not None:
            await self._ws.close()


def _is_seq(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
