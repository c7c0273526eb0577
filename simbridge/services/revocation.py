"""Taking access away: each change here also closes, at once, the live sockets that had it."""

from __future__ import annotations

from simbridge import protocol
from simbridge.config import Settings
from simbridge.models import User
from simbridge.services import accounts, devices
from simbridge.services.guard import Rules
from simbridge.services.identities import Identities
from simbridge.services.relay import Relay
from simbridge.services.sessions import DEVICE_TOKEN, USER_TOKEN, Session


async def log_out_everywhere(
    user: User, settings: Settings, identities: Identities, relay: Relay
) -> str:
    """Revoke every token of the user; returns a fresh one."""
    token = await accounts.revoke_tokens(user, settings)
    identities.forget(user.id)
    await _close_older_user_tokens(user, relay)
    return token


async def change_password(
    user: User,
    current: str,
    new: str,
    settings: Settings,
    guard: Rules,
    identities: Identities,
    relay: Relay,
) -> str:
    token = await accounts.change_password(user, current, new, settings, guard)
    identities.forget(user.id)
    await _close_older_user_tokens(user, relay)
    return token


async def rotate_device_token(user: User, device_id: int, relay: Relay) -> str:
    token = await devices.rotate_device_token(user, device_id)

    def opened_with_old_token(session: Session) -> bool:
        return session.device_id == device_id and session.credential == DEVICE_TOKEN

    await relay.close_sessions(user.id, opened_with_old_token, protocol.CLOSE_REVOKED, "revoked")
    return token


async def remove_device(user: User, device_id: int, relay: Relay) -> None:
    device = await devices.owned_device(user, device_id, None)
    peers = (
        *await relay.directory.hosts_of(device.id),
        *await relay.directory.clients_of(device.id),
    )
    await device.delete()
    relay.directory.forget(device.id, *peers)

    def of_device(session: Session) -> bool:
        return session.device_id == device_id

    await relay.close_sessions(user.id, of_device, protocol.CLOSE_REMOVED, "device removed")


async def _close_older_user_tokens(user: User, relay: Relay) -> None:
    def revoked(session: Session) -> bool:
        version = session.token_version
        return (
            session.credential == USER_TOKEN
            and version is not None
            and version < user.token_version
        )

    await relay.close_sessions(user.id, revoked, protocol.CLOSE_REVOKED, "revoked")
