"""Registering users, logging them in, and knowing who a token belongs to."""

from __future__ import annotations

import asyncio
from functools import cache

import bcrypt
from tortoise.exceptions import IntegrityError

from simbridge.config import Settings
from simbridge.errors import InvalidCredentials, UsernameTaken
from simbridge.models import MAX_ID, User
from simbridge.security import create_token, hash_password, user_id_from_token, verify_password

WRONG_LOGIN = "Incorrect username or password"


async def register_user(username: str, password: str, settings: Settings) -> User:
    if await User.exists(username=username):
        raise UsernameTaken()
    password_hash = await hash_password(password, settings.bcrypt_rounds)
    try:
        return await User.create(username=username, password_hash=password_hash)
    except IntegrityError as exc:  # registered by a concurrent request meanwhile
        raise UsernameTaken() from exc


async def login(username: str, password: str, settings: Settings) -> tuple[str, int]:
    """A fresh token and the user id; the same error, after the same work, for any mistake."""
    user = await User.get_or_none(username=username)
    if user is not None:
        stored_hash = user.password_hash
    else:
        stored_hash = await asyncio.to_thread(_dummy_hash, settings.bcrypt_rounds)
    try:
        matches = await verify_password(password, stored_hash)
    except ValueError:  # over bcrypt's 72 bytes: cannot be anyone's password
        matches = False
    if user is None or not matches:
        raise InvalidCredentials(WRONG_LOGIN)
    token = create_token(user.id, settings.jwt_secret, settings.clock(), settings.token_ttl_seconds)
    return token, user.id


async def user_for_token(token: str | None, settings: Settings) -> User:
    if not token:
        raise InvalidCredentials("Not authenticated: send Authorization: Bearer <token>")
    user_id = user_id_from_token(token, settings.jwt_secret, settings.clock())
    known = user_id is not None and 1 <= user_id <= MAX_ID
    user = await User.get_or_none(id=user_id) if known else None
    if user is None:
        raise InvalidCredentials()
    return user


@cache
def _dummy_hash(rounds: int) -> str:
    """A hash to check unknown usernames against, so they cost as long as wrong passwords."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=rounds)).decode()
