"""Pairing codes and pairings (contract §2, §3).

A code is looked up only among the caller's own live codes, so it is worthless to anyone
without the account.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from tortoise.exceptions import IntegrityError

from simbridge.config import Settings
from simbridge.errors import InvalidPairingCode
from simbridge.models import DeviceType, Pairing, PairingCode, User
from simbridge.services.devices import owned_device
from simbridge.services.directory import PairingDirectory

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
    expires_at = now + timedelta(seconds=settings.pairing_code_ttl_seconds)
    for _ in range(CODE_ATTEMPTS):
        code = f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"
        if await PairingCode.exists(code=code, used=False, expires_at__gt=now):
            continue
        created = await PairingCode.create(
            user=user, host_device=host, code=code, expires_at=expires_at
        )
        if await PairingCode.filter(code=code, used=False, expires_at__gt=now).count() == 1:
            return code
        await created.delete()
    raise RuntimeError("no free pairing code after several attempts")  # pragma: no cover


async def confirm_pairing(
    user: User, code: str, client_device_id: int, settings: Settings, directory: PairingDirectory
) -> Pairing:
    """Spend the code and pair its host with the caller's client (or return the existing pair)."""
    client = await owned_device(user, client_device_id, DeviceType.CLIENT)
    if not is_code_shaped(code):
        raise InvalidPairingCode()
    live = await PairingCode.get_or_none(
        user_id=user.id, code=code, used=False, expires_at__gt=settings.clock()
    )
    # Spending is one conditional UPDATE, so two concurrent confirms cannot both win.
    if live is None or not await PairingCode.filter(id=live.id, used=False).update(used=True):
        raise InvalidPairingCode()
    pairing = await Pairing.get_or_none(host_device_id=live.host_device_id, client_device=client)
    if pairing is None:
        try:
            pairing = await Pairing.create(host_device_id=live.host_device_id, client_device=client)
        except IntegrityError:  # paired by a concurrent request meanwhile
            pairing = await Pairing.get(host_device_id=live.host_device_id, client_device=client)
    directory.forget(live.host_device_id, client.id)
    return pairing
