"""The one source of "now" for the server, so tests can move time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; handed to the app in place of `utc_now`."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utc_now()

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
