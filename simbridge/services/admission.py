"""Who may open a device's socket: the credential, the device, and the per-user socket cap.

On a warm cache a handshake costs no query: the user comes from `Identities`, the device from
`DeviceRecords`, and `Admission.still_valid` is answered from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simbridge.errors import RelayUnavailable, TooManyRequests
from simbridge.hub import Broker, Session
from simbridge.models import Device, DeviceType
from simbridge.protocol import CLOSE_REMOVED, CLOSE_REVOKED
from simbridge.security import is_device_token
from simbridge.services.device_records import DeviceRecords
from simbridge.services.devices import owned_record, record_for_token
from simbridge.services.identities import Identities

SOCKET_CAP_RETRY_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Admission:
    user_id: int
    device_type: DeviceType  # the socket's path: /ws/host or /ws/client
    token_version: int | None  # None: opened with the device's own token
    device_token_digest: str | None = None

    async def still_valid(
        self, device_id: int, records: DeviceRecords, identities: Identities
    ) -> bool:
        """Asked again once the socket is registered as a session.

        A revocation that lands between the handshake check and that registration would
        otherwise miss this socket: from the registration on, revocations close it.

        Answered without a query when the remembered records still say what the admission
        checked, because every revocation reaches this process as a control message that
        forgets those records (`Runtime.apply`), before it looks for sessions to close and
        without awaiting anything in between. Take a revocation committed at any time:
        - applied here after this session was registered: it closes the session itself;
        - applied here before that: it forgot the device's record (or the user's, for a
          revoked user token). A record remembered now was therefore read after it was
          applied, hence after its commit: a load that overlapped a forget is not kept (the
          caches' generation counters). Such a record reflects the revocation, so if it still
          matches the admission, the revocation did not concern this socket (say, a rotated
          device token while the socket opened with a user token).
        A record that is missing (forgotten, expired, never kept) or says otherwise is no
        proof either way: the database decides, as it did before there were caches.
        Revocations this process never heard of (the broker lost them) are caught by
        `Runtime.resync`, which forgets every record; changes made behind the server's back
        (directly in the database) are seen within `user_cache_seconds`, as everywhere else.
        """
        if self._still_remembered(device_id, records, identities):
            return True
        if self.device_token_digest is not None:
            return await Device.exists(id=device_id, device_token=self.device_token_digest)
        return await Device.exists(
            id=device_id, user_id=self.user_id, user__token_version=self.token_version
        )

    def _still_remembered(
        self, device_id: int, records: DeviceRecords, identities: Identities
    ) -> bool:
        record = records.remembered(device_id)
        if record is None or record.user_id != self.user_id:
            return False
        if record.device_type != self.device_type:
            return False
        if self.token_version is None:
            return record.token_digest == self.device_token_digest
        user = identities.remembered(self.user_id)
        return user is not None and user.token_version == self.token_version


async def admit_socket(
    token: str | None,
    device_id: int,
    device_type: DeviceType,
    identities: Identities,
    records: DeviceRecords,
    broker: Broker,
) -> Admission:
    """Admit a handshake whose credential opens this device, on this path's type.

    A user token opens any of the user's devices (401 bad token, 404 not theirs, 403 other
    type); a device token only its own device. Past the user's socket cap: 429. While the
    broker cannot reach the other processes: 503 (the socket could be neither claimed nor
    reached from them).

    Checked against the remembered user and device when there are: a revocation made in
    another process refuses handshakes here once its control message has arrived, and closes
    the sockets admitted before that.
    """
    if not broker.available():
        raise RelayUnavailable()
    if token and is_device_token(token):
        record = await record_for_token(records, token, device_id, device_type)
        admission = Admission(record.user_id, device_type, None, record.token_digest)
    else:
        user, version = await identities.user_for_token(token)
        await owned_record(records, user.id, device_id, device_type)
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
