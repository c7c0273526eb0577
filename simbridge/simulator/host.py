"""`SimulatedHost`: a host device that answers commands like a phone (`phone.answers`) and
raises incoming SMS and calls when told to (`inject`), or on a timer.

In-process (tests, the bench)::

    async with SimulatedHost(Login(url, "alice", password), device_id=3, answer_delay=0) as host:
        host.inject(phone.incoming_sms("+15551234", "hello"))

or `await host.run(stop_event)`; as a process, `simbridge simulate host` (`simulator.command`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any

from simbridge.simulator import phone
from simbridge.simulator.account import Login
from simbridge.simulator.connection import DEFAULT_BACKOFF, Backoff, Frame, Output
from simbridge.simulator.device import SimulatedDevice, print_line

PERIODIC_SENDER = "+15550100000"  # the number timed incoming SMS come from
# A phone carries out a few commands at once; the next wait their turn, in the order received
# (it sends an SMS late rather than refuse it). Beyond COMMANDS_WAITING (the server's default
# inbox size, so a full replay fits) the socket is not read until one is taken.
COMMANDS_IN_PROGRESS = 4
COMMANDS_WAITING = 1000


class SimulatedHost(SimulatedDevice):
    """Answers `GET_SIMS`, `SEND_SMS` and `MAKE_CALL`, each answer's events `answer_delay`
    seconds apart, at most `COMMANDS_IN_PROGRESS` commands at once; raises an incoming SMS
    every `incoming_sms_every` seconds when given."""

    kind = "host"

    def __init__(
        self,
        login: Login,
        *,
        device_id: int | None = None,
        device_name: str | None = None,
        answer_delay: float = 0.5,
        incoming_sms_every: float | None = None,
        output: Output = print_line,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(
            login, device_id=device_id, device_name=device_name, output=output, backoff=backoff
        )
        self.answer_delay = answer_delay
        self._every = incoming_sms_every
        self._tasks: set[asyncio.Task[None]] = set()
        self._commands: asyncio.Queue[Frame] = asyncio.Queue(COMMANDS_WAITING)

    def inject(self, event: Frame) -> None:
        """Raise an event (`phone.incoming_sms`, `phone.incoming_call`, or any event frame)."""
        self.send(event)

    def started(self) -> None:
        for _ in range(COMMANDS_IN_PROGRESS):
            self._spawn(self._carry_out_commands())
        if self._every is not None:
            self._spawn(self._incoming_sms_forever(self._every))

    async def handle(self, frame: Frame) -> None:
        if frame.get("type") == "command":
            await self._commands.put(frame)  # waits only when COMMANDS_WAITING already wait

    async def stopping(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _carry_out_commands(self) -> None:
        """One of the `COMMANDS_IN_PROGRESS` workers: answers the next command received, and
        so on until stopped."""
        while True:
            command = await self._commands.get()
            await self._answer(phone.answers(command))

    async def _answer(self, events: list[Frame]) -> None:
        for number, event in enumerate(events):
            if number and self.answer_delay > 0:
                await asyncio.sleep(self.answer_delay)
            self.send(event)

    async def _incoming_sms_forever(self, every: float) -> None:
        for number in itertools.count(1):
            await asyncio.sleep(every)
            self.inject(phone.incoming_sms(PERIODIC_SENDER, f"Simulated message {number}"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
