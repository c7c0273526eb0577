"""Who a bearer token is, remembered so that most requests cost no JWT decode and no query.

A REST request used to spend about a third of its CPU on this: HS256 verification, then a
query for the user to compare the token's version with the stored one. Here a token that
verified once is remembered (until it expires), and so is its user, for `user_cache_seconds`.
Revoking (`forget`, broadcast to every process) drops the user at once, so revoked tokens fail
on the very next request; the time limit bounds how long a change made behind the server's back
(directly in the database) could go unseen. A token newer than the remembered user is never
refused: the user is read again, so the token that logout-all returns works at once everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from simbridge.config import Settings
from simbridge.errors import InvalidCredentials
from simbridge.models import User, is_stored_id
from simbridge.security import TokenClaims, read_token

K = TypeVar("K")
V = TypeVar("V")
CAPACITY = 4096  # tokens, and users: the least recently used go first


@dataclass(frozen=True, slots=True)
class _KnownUser:
    user: User
    until: datetime


class Identities:
    def __init__(self, settings: Settings, capacity: int = CAPACITY) -> None:
        self._settings = settings
        self._capacity = capacity
        self._tokens: OrderedDict[str, TokenClaims] = OrderedDict()
        self._users: OrderedDict[int, _KnownUser] = OrderedDict()
        self._generation = 0  # bumped by `forget`: a load that raced with it is not kept

    async def user_for_token(self, token: str | None) -> tuple[User, int]:
        """The user a valid, unrevoked token names, and the token's version."""
        if not token:
            raise InvalidCredentials("Not authenticated: send Authorization: Bearer <token>")
        claims = self._claims(token)
        user = await self._user(claims.user_id) if claims else None
        if user is not None and claims is not None and claims.version > user.token_version:
            # Versions only grow: a token newer than the remembered user was issued after it
            # was read (by another process, whose broadcast may still be on its way).
            self.forget(user.id)
            user = await self._user(claims.user_id)
        if user is None or claims is None or claims.version != user.token_version:
            raise InvalidCredentials()
        return user, claims.version

    def remembered(self, user_id: int) -> User | None:
        """The user if remembered and not yet expired; never a query."""
        known = self._users.get(user_id)
        if known is None or known.until <= self._settings.clock():
            return None
        self._users.move_to_end(user_id)
        return known.user

    def forget(self, user_id: int) -> None:
        """The user's tokens were revoked: look the user up again on the next request."""
        self._generation += 1
        self._users.pop(user_id, None)

    def forget_everything(self) -> None:
        """Revocations may have been missed (the broker lost messages): read users again."""
        self._generation += 1
        self._users.clear()

    def _claims(self, token: str) -> TokenClaims | None:
        now = self._settings.clock()
        claims = self._tokens.get(token)
        if claims is not None and claims.expires_at > now.timestamp():
            self._tokens.move_to_end(token)
            return claims
        claims = read_token(token, self._settings.jwt_secret, now)
        if claims is not None and is_stored_id(claims.user_id):
            _remember(self._tokens, token, claims, self._capacity)
            return claims
        self._tokens.pop(token, None)
        return None

    async def _user(self, user_id: int) -> User | None:
        user = self.remembered(user_id)
        if user is not None:
            return user
        now = self._settings.clock()
        generation = self._generation
        user = await User.get_or_none(id=user_id)
        ttl = self._settings.user_cache_seconds
        if user is not None and ttl > 0 and generation == self._generation:
            until = now + timedelta(seconds=ttl)
            _remember(self._users, user_id, _KnownUser(user, until), self._capacity)
        return user


def _remember(cache: OrderedDict[K, V], key: K, value: V, capacity: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > capacity:
        cache.popitem(last=False)
