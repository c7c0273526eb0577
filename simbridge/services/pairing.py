"""Pairing codes and pairings (contract §2, §3).

A code is looked up only among the caller's own live codes, so it is worthless to anyone
without the account.
"""

from __future__ import annotations

import math
import secrets
from datetime import timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from simbridge.config import Settings
from simbridge.errors import InvalidPairingCode, NotFound, TooManyRequests
from simbridge.hub import Broker
from simbridge.hub.control import ForgetPairings
from simbridge.models import DeviceType, Pairing, PairingCode, User, is_stored_id
from simbridge.security import pairing_code_digest
from simbridge.services.devices import owned_device
from simbridge.services.guard import Rules

CODE_ATTEMPTS = 20
CODE_LENGTH = 6


def is_code_shaped(code: str) -> bool:
    return len(code) == CODE_LENGTH and code.isascii() and code.isdigit()


async def create_pairing_code(user: User, host_device_id: int, settings: Settings) -> str:
    """A fresh 6-digit code for the caller's host, unique among all live codes.

    Optimistic: store a random code, then check that no other live code has it (a concurrent
    request, maybe in another process); on a clash, drop ours and draw again.
    """
    host = await owned_device(user, host_device_id, DeviceType.HOST)
    now = settings.clock()
    await _refuse_too_many_live_codes(user, host.id, settings)
    expires_at = now + timedelta(seconds=settings.pairing_code_ttl_seconds)
    for _ in range(CODE_ATTEMPTS):
        code = f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"
        digest = pairing_code_digest(code, settings.jwt_secret)
        if await PairingCode.exists(code=digest, used=False, expires_at__gt=now):
            continue
        created = await PairingCode.create(
            user=user, host_device=host, code=digest, expires_at=expires_at
        )
        if await PairingCode.filter(code=digest, used=False, expires_at__gt=now).count() == 1:
            return code
        await created.delete()
    raise RuntimeError("no free pairing code after several attempts")  # pragma: no cover


async def confirm_pairing(
    user: User,
    code: str,
    client_device_id: int,
    settings: Settings,
    broker: Broker,
    guard: Rules,
) -> Pairing:
    """Spend the code and pair its host with the caller's client (or return the existing pair).

    `guard` counts wrong codes per user and per address; over the limit, even a right code
    gets 429 until the window has passed.
    """
    client = await owned_device(user, client_device_id, DeviceType.CLIENT)
    await guard.check()
    live = None
    if is_code_shaped(code):
        live = await PairingCode.get_or_none(
            user_id=user.id,
            code=pairing_code_digest(code, settings.jwt_secret),
            used=False,
            expires_at__gt=settings.clock(),
        )
    # Spending is one conditional UPDATE, so two concurrent confirms cannot both win.
    if live is None or not await PairingCode.filter(id=live.id, used=False).update(used=True):
        await guard.record()
        raise InvalidPairingCode()
    pairing = await Pairing.get_or_none(host_device_id=live.host_device_id, client_device=client)
    if pairing is None:
        try:
            pairing = await Pairing.create(host_device_id=live.host_device_id, client_device=client)
        except IntegrityError:  # paired meanwhile, or one of the devices was just deleted
            pairing = await Pairing.get_or_none(
                host_device_id=live.host_device_id, client_device=client
            )
            if pairing is None:
                raise NotFound("Device not found") from None
    await broker.broadcast(ForgetPairings((live.host_device_id, client.id)))
    return pairing


async def _refuse_too_many_live_codes(user: User, host_id: int, settings: Settings) -> None:
    """Few live codes keep guessing hopeless (see docs/security.md): 429 until one expires."""
    now = settings.clock()
    live = PairingCode.filter(user_id=user.id, used=False, expires_at__gt=now)
    per_host = await live.filter(host_device_id=host_id).count()
    per_user = await live.count()
    if per_host >= settings.max_live_codes_per_host or per_user >= settings.max_live_codes_per_user:
        oldest = await live.order_by("expires_at").first()
        wait = (oldest.expires_at - now).total_seconds() if oldest else 1
        raise TooManyRequests(max(1, math.ceil(wait)))


async def list_pairings(user: User) -> list[dict[str, Any]]:
    pairings = await Pairing.filter(
        Q(host_device__user_id=user.id) | Q(client_device__user_id=user.id)
    ).order_by("id")
    return [
        {
            "id": pairing.id,
            "host_device_id": pairing.host_device_id,
            "client_device_id": pairing.client_device_id,
            "created_at": pairing.created_at,
        }
        for pairing in pairings
    ]


async def delete_pairing(user: User, pairing_id: int, broker: Broker) -> None:
    """Unpair (either side's owner may); routing between the two stops at once."""
    pairing = None
    if is_stored_id(pairing_id):
        pairing = await Pairing.get_or_none(
            Q(host_device__user_id=user.id) | Q(client_device__user_id=user.id), id=pairing_id
        )
    if pairing is None:
        raise NotFound("Pairing not found")
    await pairing.delete()
    await broker.broadcast(ForgetPairings((pairing.host_device_id, pairing.client_device_id)))
