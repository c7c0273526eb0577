"""Passwords and tokens, with no web framework in sight.

bcrypt is slow on purpose (about 0.3 s at cost 12), so it always runs in a worker thread:
one login must never stall the messages every other device is relaying. Those threads are
fewer than the cores (one on a 2-core machine): ten logins at once would otherwise take every
core from the event loop, and relaying would wait for CPU instead of for the loop.

Two kinds of credential open a device's socket:
- a user token: a JWT (HS256 only) with `sub`, `iat`, `exp` and `ver`, the user's token
  version; bumping the version revokes every older token at once;
- a device token: a random secret shown once when the device is registered (or rotated),
  stored only as its SHA-256; it opens that one device's socket and nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

import bcrypt
import jwt

ALGORITHM = "HS256"
DEVICE_TOKEN_PREFIX = "sbd_"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    version: int
    expires_at: int  # seconds since the epoch


BCRYPT_THREADS = max(1, len(os.sched_getaffinity(0)) - 1)  # the cores this process may use
_bcrypt_pool: ThreadPoolExecutor | None = None


T = TypeVar("T")


async def run_bcrypt(work: Callable[[], T]) -> T:
    """Run bcrypt work on the pool kept for it, so it leaves a core to the event loop."""
    global _bcrypt_pool
    if _bcrypt_pool is None:  # created on first use: importing this module starts no thread
        _bcrypt_pool = ThreadPoolExecutor(BCRYPT_THREADS, thread_name_prefix="bcrypt")
    return await asyncio.get_running_loop().run_in_executor(_bcrypt_pool, work)


async def hash_password(password: str, rounds: int) -> str:
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await run_bcrypt(partial(bcrypt.hashpw, password.encode(), salt))
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    return await run_bcrypt(partial(bcrypt.checkpw, password.encode(), password_hash.encode()))


def create_token(
    user_id: int, secret: str, now: datetime, ttl_seconds: int, version: int = 0
) -> str:
    issued = int(now.timestamp())
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + ttl_seconds, "ver": version}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(token: str, secret: str, now: datetime) -> TokenClaims | None:
    """The claims of a valid token, or None for a forged, expired or malformed one.

    Tokens issued before token versions existed carry no `ver`: they count as version 0.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "iat", "exp"], "verify_exp": False},
        )
        version = claims.get("ver", 0)
        if claims["exp"] <= now.timestamp() or type(version) is not int:
            return None
        return TokenClaims(user_id=int(claims["sub"]), version=version, expires_at=claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None


def pairing_code_digest(code: str, secret: str) -> str:
    """What is stored of a pairing code: keyed, so a database dump does not reveal live codes."""
    return hmac.new(secret.encode(), b"pairing-code:" + code.encode(), hashlib.sha256).hexdigest()


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_device_token(token: str) -> bool:
    return token.startswith(DEVICE_TOKEN_PREFIX)


def device_token_digest(token: str) -> str:
    """What is stored of a device token. SHA-256 suffices: the token has 256 random bits."""
    return hashlib.sha256(token.encode()).hexdigest()


def device_token_matches(token: str, digest: str | None) -> bool:
    return digest is not None and hmac.compare_digest(device_token_digest(token), digest)
