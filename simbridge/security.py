"""Passwords and tokens, with no web framework in sight.

bcrypt is slow on purpose (about 0.3 s at cost 12), so it always runs in a worker thread:
one login must never stall the messages every other device is relaying.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import bcrypt
import jwt

ALGORITHM = "HS256"


async def hash_password(password: str, rounds: int) -> str:
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    return await asyncio.to_thread(bcrypt.checkpw, password.encode(), password_hash.encode())


def create_token(user_id: int, secret: str, now: datetime, ttl_seconds: int) -> str:
    issued = int(now.timestamp())
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def user_id_from_token(token: str, secret: str, now: datetime) -> int | None:
    """The user id a valid token names, or None for a forged, expired or malformed one."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "iat", "exp"], "verify_exp": False},
        )
        if claims["exp"] <= now.timestamp():
            return None
        return int(claims["sub"])
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None
