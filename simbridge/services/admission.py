"""Who may open a device's socket: the credential, the device, and the per-user socket cap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simbridge.errors import RelayUnavailable, TooManyRequests
from simbridge.hub import Broker, Session
from simbridge.models import Device, DeviceType
from simbridge.protocol import CLOSE_REMOVED, CLOSE_REVOKED
from simbridge.security import is_device_token
from simbridge.services.devices import device_for_token, owned_device
from simbridge.services.identities import Identities

SOCKET_CAP_RETRY_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Admission:
    user_id: int
    device_type: DeviceType  # the socket's path: /ws/host or /ws/client
    token_version: int | None  # None: opened with the device's own token
    device_token_digest: str | None = None

    async def still_valid(self, device_id: int) -> bool:
        """Asked again once the socket is registered as a session.

        A revocation that lands between the handshake check and that registration would
        otherwise miss this socket: from the registration on, revocations close it.
        """
        if self.device_token_digest is not None:
            return await Device.exists(id=device_id, device_token=self.device_token_digest)
        return await Device.exists(
            id=device_id, user_id=self.user_id, user__token_version=self.token_version
        )


async def admit_socket(
    token: str | None,
    device_id: int,
    device_type: DeviceType,
    identities: Identities,
    broker: Broker,
) -> Admission:
    """Admit a handshake whose credential opens this device, on this path's type.

    A user token opens any of the user's devices (401 bad token, 404 not theirs, 403 other
    type); a device token only its own device. Past the user's socket cap: 429. While the
    broker cannot reach the other processes: 503 (the socket could be neither claimed nor
    reached from them).
    """
    if not broker.available():
        raise RelayUnavailable()
    if token and is_device_token(token):
        device = await device_for_token(token, device_id, device_type)
        admission = Admission(device.user_id, device_type, None, device.device_token)
    else:
        user, version = await identities.user_for_token(token)
        await owned_device(user, device_id, device_type)
        admission = Admission(user.id, device_type, version)
    if not await broker.has_room(admission.user_id, device_id):
        raise TooManyRequests(SOCKET_CAP_RETRY_SECONDS)
    return admission


async def no_longer_admitted(sessions: Sequence[Session]) -> list[tuple[Session, int]]:
    """The sessions whose access went meanwhile, each with its close code: 4002 for a deleted
    device, 4001 for a revoked credential. One query, however many sessions."""
    rows = await Device.filter(id__in={s.device_id for s in sessions}).values(
        "id", "device_token", "user__token_version"
    )
    stored = {row["id"]: row for row in rows}
    gone = []
    for session in sessions:
        row = stored.get(session.device_id)
        if row is None:
            gone.append((session, CLOSE_REMOVED))
        elif session.token_version is None:
            if row["device_token"] != session.device_token_digest:
                gone.append((session, CLOSE_REVOKED))
        elif row["user__token_version"] != session.token_version:
            gone.append((session, CLOSE_REVOKED))
    return gone
