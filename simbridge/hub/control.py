"""Control messages: what one process asks of every process (revocations, pairing changes,
queued commands, answers for callers waiting elsewhere, webhook changes).

They are plain data, so a broker can carry them between processes; each process matches them
against its own sessions and caches (`simbridge.runtime.Runtime.apply`).
"""

from __future__ import annotations

from dataclasses import dataclass

from simbridge.hub.session import Session


@dataclass(frozen=True, slots=True)
class CloseSessions:
    """Close the user's sockets that match every given field, with `code`.

    `credential` is `user` or `device`; `token_version_below` selects sockets opened with a
    user token older than that version.
    """

    user_id: int
    code: int
    reason: str
    device_id: int | None = None
    credential: str | None = None
    token_version_below: int | None = None

    def matches(self, session: Session) -> bool:
        version = session.token_version
        return (
            session.user_id == self.user_id
            and (self.device_id is None or session.device_id == self.device_id)
            and (self.credential is None or session.credential == self.credential)
            and (
                self.token_version_below is None
                or (version is not None and version < self.token_version_below)
            )
        )


@dataclass(frozen=True, slots=True)
class ForgetPairings:
    """The pairings of these devices changed: load them again."""

    device_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ForgetUser:
    """The user's tokens or account changed: check them again."""

    user_id: int


@dataclass(frozen=True, slots=True)
class CommandsQueued:
    """A command was queued for this host: whichever process holds its socket writes it."""

    host_id: int


@dataclass(frozen=True, slots=True)
class WaitedAnswer:
    """The host answered a REST command whose caller may be waiting (`wait=S`) in another
    process: `event` is the answer."""

    host_id: int
    req_id: str
    event: str


@dataclass(frozen=True, slots=True)
class WebhooksChanged:
    """The user created or deleted a webhook: load the user's webhooks again."""

    user_id: int


Control = (
    CloseSessions | ForgetPairings | ForgetUser | CommandsQueued | WaitedAnswer | WebhooksChanged
)
