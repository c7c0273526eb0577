"""`simbridge simulate host|client`: the simulator as a process. Its stdout has one line per
frame (`< ` received, `> ` sent) and `# ` notes; never a password or a token. SIGINT and
SIGTERM stop it with exit 0; a reason to stop early (bad URL, wrong password, unknown device,
no server after every reconnection attempt) is one line on stderr and exit 1."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator

from simbridge.simulator import phone
from simbridge.simulator.account import Login, SimulatorError
from simbridge.simulator.client import SimulatedClient
from simbridge.simulator.connection import DEFAULT_BACKOFF, Backoff
from simbridge.simulator.device import SimulatedDevice
from simbridge.simulator.host import SimulatedHost

PASSWORD_VARIABLE = "SIMBRIDGE_SIM_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:8100"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`simulate host` and `simulate client`, under the `simbridge` command's subcommands."""
    simulate = commands.add_parser("simulate", help="a simulated host phone, or a small client")
    kinds = simulate.add_subparsers(dest="kind", required=True)
    host = kinds.add_parser("host", help="a host that answers commands like a phone")
    _common(host)
    host.add_argument(
        "--answer-delay",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="between SMS_SENT and SMS_DELIVERED, and between call states (default 0.5)",
    )
    host.add_argument(
        "--incoming-sms-every",
        type=_period,
        metavar="SECONDS",
        help="raise an INCOMING_SMS this often",
    )
    host.add_argument(
        "--stdin",
        action="store_true",
        help="read `sms FROM BODY` / `call FROM` lines and raise those incoming events",
    )
    client = kinds.add_parser("client", help="send commands typed on stdin, print events")
    _common(client)
    client.add_argument(
        "--host-device-id",
        type=int,
        metavar="N",
        help="pair with this host of the account (if not yet) and address commands to it",
    )
    client.add_argument(
        "--linger",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="keep printing events this long after stdin ends (default 2)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument("--username", required=True)
    parser.add_argument(
        "--password", help=f"the account's password (default: ${PASSWORD_VARIABLE})"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--device-id", type=int, metavar="N", help="an existing device of the account"
    )
    which.add_argument(
        "--device-name",
        metavar="NAME",
        help="the account's device of this name, created if missing",
    )
    parser.add_argument(
        "--reconnect-attempts",
        type=int,
        default=DEFAULT_BACKOFF.attempts,
        metavar="N",
        help=f"reconnection failures in a row before exiting (default {DEFAULT_BACKOFF.attempts})",
    )


def run(args: argparse.Namespace) -> int:
    """Run `simulate host` or `simulate client` until a signal (0) or a reason to stop (1)."""
    password = args.password or os.environ.get(PASSWORD_VARIABLE)
    if not password:
        print(f"simbridge simulate: give --password or set {PASSWORD_VARIABLE}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        login = Login(args.url, args.username, password)
        asyncio.run(_simulate(args, login))
    except SimulatorError as exc:
        print(f"simbridge simulate: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


async def _simulate(args: argparse.Namespace, login: Login) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    backoff = Backoff(attempts=args.reconnect_attempts)
    which = {"device_id": args.device_id, "device_name": args.device_name}
    device: SimulatedDevice
    if args.kind == "host":
        device = host = SimulatedHost(
            login,
            answer_delay=args.answer_delay,
            incoming_sms_every=args.incoming_sms_every,
            backoff=backoff,
            **which,
        )
        feed = _inject_from_stdin(host) if args.stdin else None
    else:
        device = client = SimulatedClient(
            login, host_device_id=args.host_device_id, backoff=backoff, **which
        )
        feed = _commands_from_stdin(client, args.linger, stop)
    running = asyncio.create_task(device.run(stop))
    reading = None if feed is None else asyncio.create_task(feed)
    try:
        await running
    finally:
        if reading is not None:
            reading.cancel()


async def _inject_from_stdin(host: SimulatedHost) -> None:
    async for line in _stdin_lines():
        if not line.strip():
            continue
        try:
            event = phone.injection(line)
        except ValueError as exc:
            host.output(f"# {exc}")
        else:
            await host.linked.wait()  # lines typed before that wait
            host.inject(event)


async def _commands_from_stdin(client: SimulatedClient, linger: float, stop: asyncio.Event) -> None:
    async for line in _stdin_lines():
        if not line.strip():
            continue
        await client.linked.wait()
        try:
            client.command(line)
        except ValueError as exc:
            client.output(f"# {exc}")
    await client.wait_connected()  # what was typed is on its way once connected
    await asyncio.sleep(linger)
    stop.set()


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read by a daemon thread: a blocked read then never holds up the exit,
    and stdin may be a terminal, a pipe or a file."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except RuntimeError:  # the loop is closed: the simulator has stopped
            return

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while (line := await lines.get()) is not None:
        yield line


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def _period(raw: str) -> float:
    value = _seconds(raw)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value
