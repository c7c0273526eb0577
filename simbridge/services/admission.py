"""Who may open a device's socket: the credential, the device, and the per-user socket cap."""

from __future__ import annotations

from dataclasses import dataclass

from simbridge.errors import TooManyRequests
from simbridge.hub import Hub
from simbridge.models import Device, DeviceType
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
    hub: Hub,
) -> Admission:
    """Admit a handshake whose credential opens this device, on this path's type.

    A user token opens any of the user's devices (401 bad token, 404 not theirs, 403 other
    type); a device token only its own device. Past the user's socket cap: 429.
    """
    if token and is_device_token(token):
        device = await device_for_token(token, device_id, device_type)
        admission = Admission(device.user_id, device_type, None, device.device_token)
    else:
        user, version = await identities.user_for_token(token)
        await owned_device(user, device_id, device_type)
        admission = Admission(user.id, device_type, version)
    if not hub.has_room(admission.user_id, device_id):
        raise TooManyRequests(SOCKET_CAP_RETRY_SECONDS)
    return admission
