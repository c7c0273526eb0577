"""`SimulatedDevice`: what the simulated host and client share. It logs in, takes over its
device (`Account.device`), and keeps the device's socket open (`Link`) until stopped;
`async with` runs it in the background, `run(stop_event)` in the foreground."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from simbridge.simulator.account import Account, DeviceAccess, Login, SimulatorError
from simbridge.simulator.connection import DEFAULT_BACKOFF, Backoff, Frame, Link, Output


def print_line(line: str) -> None:
    print(line, flush=True)  # noqa: T201 (the simulator's output is its stdout)


class SimulatedDevice:
    kind = ""  # "host" or "client"

    def __init__(
        self,
        login: Login,
        *,
        device_id: int | None = None,
        device_name: str | None = None,
        output: Output = print_line,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        if (device_id is None) == (device_name is None):
            raise SimulatorError("give a device id or a device name (one of them)")
        self.login = login
        self.output = output
        self._wanted = (device_id, device_name)
        self._backoff = backoff
        self._link: Link | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.linked = asyncio.Event()  # set once `link` exists: frames may be sent

    @property
    def device_id(self) -> int:
        """The device's id (known once started)."""
        return self.link.device.device_id

    @property
    def link(self) -> Link:
        if self._link is None:
            raise RuntimeError("not started yet")
        return self._link

    def send(self, frame: Frame) -> None:
        """Send `frame` on the device's socket now, or as soon as it is back."""
        self.link.send(frame)

    async def run(self, stop: asyncio.Event) -> None:
        """Log in, open the device, and serve its socket until `stop` is set. Raises
        `SimulatorError` when that cannot go on (see `Link.run`)."""
        async with Account.open(self.login) as account:
            device = await account.device(self.kind, *self._wanted)
            await self.prepare(account, device)
        self._link = Link(self.login.ws_url, device, self.output, self._backoff)
        self.output(f"# {device.kind} device {device.device_id} ({device.name!r})")
        self.linked.set()
        self.started()
        try:
            await self._link.run(self.handle, stop)
        finally:
            await self.stopping()

    async def prepare(self, account: Account, device: DeviceAccess) -> None:
        """Anything else to do over REST before the socket opens."""

    def started(self) -> None:
        """The link exists: frames may be sent (they wait until it is connected)."""

    async def handle(self, frame: Frame) -> None:
        """A frame received on the socket."""

    async def stopping(self) -> None:
        """The socket is closed for good."""

    async def __aenter__(self) -> Self:
        """Run in the background until the first greeting; raises what ended it before."""
        self._task = asyncio.create_task(self.run(self._stop))
        greeted = asyncio.create_task(self.wait_connected())
        done, _ = await asyncio.wait({self._task, greeted}, return_when=asyncio.FIRST_COMPLETED)
        if greeted not in done:
            greeted.cancel()
            self._task.result()  # raises what ended it
            raise SimulatorError("stopped before connecting")
        return self

    async def wait_connected(self) -> None:
        """Until the device's socket is open and greeted (for callers of `run`)."""
        await self.linked.wait()
        await self.link.connected.wait()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
