"""Presence frames (contract §8): a `since` socket hears its paired devices come and go, and is
told their state right after its greeting. v1 sockets never hear of it."""

from __future__ import annotations

from simbridge import protocol
from simbridge.hub import Broker, Hub, Session
from simbridge.models import DeviceType
from simbridge.services.directory import PairingDirectory


class Presence:
    def __init__(self, hub: Hub, broker: Broker, directory: PairingDirectory) -> None:
        self._hub = hub
        self._broker = broker
        self._directory = directory

    async def announce(self, session: Session, online: bool) -> None:
        """Tell the `since` sockets here of the session device's paired devices that it came
        (or went)."""
        if not self._hub.any_since():
            return  # nobody here to tell: no lookup of the peers on a v1 handshake
        frame = protocol.presence(session.device_id, online)
        for peer in await self._peers(session):
            peer_session = self._hub.session_of(peer)
            if peer_session is not None and peer_session.since is not None:
                await self._hub.send(peer, frame)

    async def of_peers(self, session: Session) -> list[str]:
        """A presence frame for each paired device of the session's device."""
        peers = await self._peers(session)
        online = await self._broker.online(peers)
        return [protocol.presence(peer, peer in online) for peer in peers]

    async def _peers(self, session: Session) -> tuple[int, ...]:
        if session.device_type is DeviceType.HOST:
            return await self._directory.clients_of(session.device_id)
        return await self._directory.hosts_of(session.device_id)
