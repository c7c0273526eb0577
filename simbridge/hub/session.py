"""One open socket and who opened it: what the hub matches control messages against."""

from __future__ import annotations

from dataclasses import dataclass, field

from simbridge.hub.base import Connection
from simbridge.limits import TokenBucket
from simbridge.models import DeviceType

USER_TOKEN = "user"
DEVICE_TOKEN = "device"


@dataclass(eq=False, slots=True)
class Session:
    """One open socket. `token_version` is the user token's version, or None for a device
    token, whose digest is `device_token_digest`; `bucket` is the device's frame rate, shared
    by its successive sockets; `since` is None for a v1 socket."""

    conn: Connection
    device_id: int
    device_type: DeviceType
    user_id: int
    token_version: int | None
    bucket: TokenBucket = field(repr=False)
    device_token_digest: str | None = field(default=None, repr=False)
    # A `since` socket (contract §6): its frames carry their seq, and it is replayed first
    since: int | None = None
    # While its replay is being read, the frames routed to it wait here: (seq, frame)
    held: list[tuple[int | None, str]] | None = field(default=None, repr=False)

    @property
    def credential(self) -> str:
        return USER_TOKEN if self.token_version is not None else DEVICE_TOKEN
