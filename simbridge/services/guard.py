"""The brute-force limits of the REST API: which keys count, and how many failures they allow.

Every rule counts per key (a username, a user, a client address) within a sliding window; a
key over its limit gets 429 with `Retry-After` until its oldest counted event leaves the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from simbridge.config import Settings
from simbridge.errors import TooManyRequests
from simbridge.limits import Limit, Limiter


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    limit: Limit
    forgiven_on_success: bool = False


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules one attempt is counted under."""

    limiter: Limiter
    rules: tuple[Rule, ...]

    async def check(self) -> None:
        """Raise `TooManyRequests` if any key is over its limit now."""
        waits = [await self.limiter.retry_after(rule.key, rule.limit) for rule in self.rules]
        longest = max((wait for wait in waits if wait is not None), default=None)
        if longest is not None:
            raise TooManyRequests(longest)

    async def record(self) -> None:
        for rule in self.rules:
            await self.limiter.record(rule.key, rule.limit)

    async def succeeded(self) -> None:
        """A success clears the personal keys (a username), never the shared ones (an address)."""
        for rule in self.rules:
            if rule.forgiven_on_success:
                await self.limiter.reset(rule.key)


class Guard:
    def __init__(self, limiter: Limiter, settings: Settings) -> None:
        self._limiter = limiter
        window = settings.login_window_seconds
        self._login_user = Limit(settings.login_failures_per_username, window)
        self._login_address = Limit(settings.login_failures_per_address, window)
        self._register_address = Limit(
            settings.registrations_per_address, settings.registration_window_seconds
        )
        self._pair_user = Limit(settings.pair_failures_per_user, settings.pair_window_seconds)
        self._pair_address = Limit(settings.pair_failures_per_address, settings.pair_window_seconds)

    def login(self, username: str, address: str) -> Rules:
        """Failed logins (or password changes) per username, and per client address."""
        return Rules(
            self._limiter,
            (
                Rule(f"login:user:{username}", self._login_user, forgiven_on_success=True),
                Rule(f"login:address:{address}", self._login_address),
            ),
        )

    def registration(self, address: str) -> Rules:
        """Registrations (each costs a bcrypt hash) per client address."""
        return Rules(self._limiter, (Rule(f"register:address:{address}", self._register_address),))

    def pairing(self, user_id: int, address: str) -> Rules:
        """Wrong pairing codes per user, and per client address."""
        return Rules(
            self._limiter,
            (
                Rule(f"pair:user:{user_id}", self._pair_user),
                Rule(f"pair:address:{address}", self._pair_address),
            ),
        )
