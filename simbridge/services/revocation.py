"""Taking access away: each change is committed to the database, then broadcast, so every
process closes the live sockets that had the access and forgets what it cached."""

from __future__ import annotations

from simbridge import protocol
from simbridge.config import Settings
from simbridge.hub import Broker
from simbridge.hub.control import CloseSessions, ForgetPairings, ForgetUser
from simbridge.hub.session import DEVICE_TOKEN, USER_TOKEN
from simbridge.models import User
from simbridge.services import accounts, devices
from simbridge.services.commands import Commands
from simbridge.services.directory import PairingDirectory
from simbridge.services.guard import Rules
from simbridge.services.redis_inboxes import RedisInboxes


async def log_out_everywhere(user: User, settings: Settings, broker: Broker) -> str:
    """Revoke every token of the user; returns a fresh one."""
    token = await accounts.revoke_tokens(user, settings)
    await _close_older_user_tokens(user, broker)
    return token


async def change_password(
    user: User, current: str, new: str, settings: Settings, guard: Rules, broker: Broker
) -> str:
    token = await accounts.change_password(user, current, new, settings, guard)
    await _close_older_user_tokens(user, broker)
    return token


async def rotate_device_token(user: User, device_id: int, broker: Broker) -> str:
    token = await devices.rotate_device_token(user, device_id)
    await broker.broadcast(
        CloseSessions(
            user.id,
            protocol.CLOSE_REVOKED,
            "revoked",
            device_id=device_id,
            credential=DEVICE_TOKEN,
        )
    )
    return token


async def remove_device(
    user: User,
    device_id: int,
    directory: PairingDirectory,
    broker: Broker,
    commands: Commands,
    inboxes: RedisInboxes | None,
) -> None:
    """Delete the device; its commands waiting in a queue (a host's) fail, and its inbox in
    Redis (when inboxes live there) goes with it."""
    device = await devices.owned_device(user, device_id, None)
    peers = (*await directory.hosts_of(device.id), *await directory.clients_of(device.id))
    await device.delete()
    await commands.host_deleted(device.id)
    await broker.broadcast(ForgetPairings((device.id, *peers)))
    await broker.broadcast(
        CloseSessions(user.id, protocol.CLOSE_REMOVED, "device removed", device_id=device_id)
    )
    if inboxes is not None:
        await inboxes.forget(device_id)


async def _close_older_user_tokens(user: User, broker: Broker) -> None:
    await broker.broadcast(ForgetUser(user.id))
    await broker.broadcast(
        CloseSessions(
            user.id,
            protocol.CLOSE_REVOKED,
            "revoked",
            credential=USER_TOKEN,
            token_version_below=user.token_version,
        )
    )
