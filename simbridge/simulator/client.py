"""`SimulatedClient`: a small client device. It sends commands written as short lines
(`command_for`) and prints every frame it receives (events, errors, presence).

With `host_device_id` it pairs itself with that host of the account (unless already paired)
and addresses every command to it (`to_device_id`); without, the server routes each command to
the client's first paired host.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any

from simbridge.simulator.account import Account, DeviceAccess, Login
from simbridge.simulator.connection import DEFAULT_BACKOFF, Backoff, Frame, Output
from simbridge.simulator.device import SimulatedDevice, print_line

USAGE = (
    "commands: `sims`, `sms SIM TO BODY...`, `call SIM TO`, `ping`, or a JSON object "
    "(sent as it is)"
)


def command_for(line: str, req_id: str) -> Frame:
    """The frame a line asks for; raises ValueError (with `USAGE`) for anything else."""
    line = line.strip()
    if line.startswith("{"):
        frame = json.loads(line)  # a ValueError when it is not JSON
        if not isinstance(frame, dict):
            raise ValueError("a JSON line must be an object")
        return frame
    words = line.split(maxsplit=3)
    name, args = (words[0].lower(), words[1:]) if words else ("", [])
    command: dict[str, Any] = {"type": "command", "req_id": req_id}
    if name == "ping" and not args:
        return {"type": "ping"}
    if name == "sims" and not args:
        return {**command, "cmd": "GET_SIMS"}
    if name in ("sms", "call") and args and args[0].isdigit():
        sim, rest = int(args[0]), args[1:]
        if name == "sms" and len(rest) == 2:
            return {**command, "cmd": "SEND_SMS", "sim": sim, "to": rest[0], "body": rest[1]}
        if name == "call" and len(rest) == 1:
            return {**command, "cmd": "MAKE_CALL", "sim": sim, "to": rest[0]}
    raise ValueError(f"not understood: {shlex.quote(line)}; {USAGE}")


class SimulatedClient(SimulatedDevice):
    kind = "client"

    def __init__(
        self,
        login: Login,
        *,
        device_id: int | None = None,
        device_name: str | None = None,
        host_device_id: int | None = None,
        output: Output = print_line,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(
            login, device_id=device_id, device_name=device_name, output=output, backoff=backoff
        )
        self.host_device_id = host_device_id

    async def prepare(self, account: Account, device: DeviceAccess) -> None:
        if self.host_device_id is not None:
            pairing = await account.pair(self.host_device_id, device.device_id)
            self.output(f"# paired with host {self.host_device_id} (pairing {pairing})")

    def command(self, line: str) -> Frame:
        """Send the command `line` asks for (see `command_for`) and return it; raises
        ValueError for a line that asks for nothing."""
        frame = command_for(line, uuid.uuid4().hex)
        if frame.get("type") == "command" and self.host_device_id is not None:
            frame.setdefault("to_device_id", self.host_device_id)
        self.send(frame)
        return frame
