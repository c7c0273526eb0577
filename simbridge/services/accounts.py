"""Registering users, logging them in, revoking their tokens and knowing who a token is."""

from __future__ import annotations

from functools import cache, partial
from typing import Any

import bcrypt
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from simbridge.config import Settings
from simbridge.errors import InvalidCredentials, UsernameTaken
from simbridge.models import USERNAME_MAX_LENGTH, User
from simbridge.security import create_token, hash_password, run_bcrypt, verify_password
from simbridge.services.guard import Rules

WRONG_LOGIN = "Incorrect username or password"


async def register_user(username: str, password: str, settings: Settings, guard: Rules) -> User:
    await guard.check()
    await guard.record()
    if await User.exists(username=username):
        raise UsernameTaken()
    password_hash = await hash_password(password, settings.bcrypt_rounds)
    try:
        return await User.create(username=username, password_hash=password_hash)
    except IntegrityError as exc:  # registered by a concurrent request meanwhile
        raise UsernameTaken() from exc


async def login(username: str, password: str, settings: Settings, guard: Rules) -> tuple[str, int]:
    """A fresh token and the user id.

    Any mistake gets the same error after the same work (an unknown name is checked against
    a dummy hash), and a name that is locked out stays locked whether or not it exists.
    """
    await guard.check()
    fits = len(username) <= USERNAME_MAX_LENGTH  # a longer name cannot exist
    user = await User.get_or_none(username=username) if fits else None
    if not await _password_matches(user, password, settings):
        await guard.record()
        raise InvalidCredentials(WRONG_LOGIN)
    assert user is not None
    await guard.succeeded()
    return issue_token(user, settings), user.id


async def change_password(
    user: User, current: str, new: str, settings: Settings, guard: Rules
) -> str:
    """Set a new password and revoke every token issued before; returns a fresh token.

    `guard` is the user's login rules: guessing the current password here is brute force too.
    """
    await guard.check()
    if not await _password_matches(user, current, settings):
        await guard.record()
        raise InvalidCredentials("Current password is incorrect")
    password_hash = await hash_password(new, settings.bcrypt_rounds)
    await _bump_token_version(user, password_hash=password_hash)
    return issue_token(user, settings)


async def revoke_tokens(user: User, settings: Settings) -> str:
    """Revoke every token of the user issued so far; returns a fresh one."""
    await _bump_token_version(user)
    return issue_token(user, settings)


def issue_token(user: User, settings: Settings) -> str:
    return create_token(
        user.id,
        settings.jwt_secret,
        settings.clock(),
        settings.token_ttl_seconds,
        version=user.token_version,
    )


async def _bump_token_version(user: User, **changes: Any) -> None:
    """One atomic UPDATE, so two concurrent revocations cannot undo each other."""
    await User.filter(id=user.id).update(token_version=F("token_version") + 1, **changes)
    await user.refresh_from_db(fields=["token_version"])


async def _password_matches(user: User | None, password: str, settings: Settings) -> bool:
    if user is not None:
        stored_hash = user.password_hash
    else:
        stored_hash = await run_bcrypt(partial(_dummy_hash, settings.bcrypt_rounds))
    try:
        return await verify_password(password, stored_hash) and user is not None
    except ValueError:  # over bcrypt's 72 bytes: cannot be anyone's password
        return False


@cache
def _dummy_hash(rounds: int) -> str:
    """A hash to check unknown usernames against, so they cost as long as wrong passwords."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=rounds)).decode()
