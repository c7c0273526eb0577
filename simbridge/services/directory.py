"""Who is paired with whom, cached in memory so relaying a message never waits on the database."""

from __future__ import annotations

from simbridge.models import Pairing


class PairingDirectory:
    """Paired peers of each device, oldest pairing first, loaded on first use.

    Whoever changes pairings calls `forget` for both devices. A load that raced with a
    `forget` is not cached, so the cache never keeps a pairing list older than the change.
    """

    def __init__(self) -> None:
        self._hosts: dict[int, tuple[int, ...]] = {}
        self._clients: dict[int, tuple[int, ...]] = {}
        self._generation = 0

    async def hosts_of(self, client_id: int) -> tuple[int, ...]:
        return await self._peers(self._hosts, client_id, "client_device_id", "host_device_id")

    async def clients_of(self, host_id: int) -> tuple[int, ...]:
        return await self._peers(self._clients, host_id, "host_device_id", "client_device_id")

    async def _peers(
        self, cache: dict[int, tuple[int, ...]], device_id: int, own_side: str, peer_side: str
    ) -> tuple[int, ...]:
        peers = cache.get(device_id)
        if peers is None:
            generation = self._generation
            rows = Pairing.filter(**{own_side: device_id}).order_by("id")
            peers = tuple([peer_id for (peer_id,) in await rows.values_list(peer_side)])
            if generation == self._generation:
                cache[device_id] = peers
        return peers

    def forget(self, *device_ids: int) -> None:
        self._generation += 1
        for device_id in device_ids:
            self._hosts.pop(device_id, None)
            self._clients.pop(device_id, None)

    def forget_everything(self) -> None:
        """Changes may have been missed (the broker lost messages): load every list again."""
        self._generation += 1
        self._hosts.clear()
        self._clients.clear()
