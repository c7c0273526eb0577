"""REST callers waiting for their host's answer (contract §7 `wait=S`).

A waiting request costs a future here and nothing else: no database connection, thread or
worker. The relay resolves it when the host sends an event with the command's `req_id`.
"""

from __future__ import annotations

import asyncio


class Answers:
    def __init__(self) -> None:
        self._waiting: dict[tuple[int, str], list[asyncio.Future[str]]] = {}

    def expect(self, host_id: int, req_id: str) -> asyncio.Future[str]:
        """A future for the first event `host_id` sends with `req_id` (before the command
        leaves: the answer may come back at once)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((host_id, req_id), []).append(future)
        return future

    async def wait(
        self, host_id: int, req_id: str, future: asyncio.Future[str], seconds: float
    ) -> str | None:
        """The answer's text, or None when `seconds` pass first."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        except TimeoutError:
            return None
        finally:
            self.forget(host_id, req_id, future)

    def answer(self, host_id: int, req_id: str, event: str) -> None:
        """The host sent `event` with `req_id`: whoever waits for it has it."""
        if not self._waiting:  # nobody waits: the common case, without a key to build
            return
        for future in self._waiting.pop((host_id, req_id), ()):
            if not future.done():
                future.set_result(event)

    def forget(self, host_id: int, req_id: str, future: asyncio.Future[str]) -> None:
        """The caller stopped waiting."""
        waiting = self._waiting.get((host_id, req_id))
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiting[(host_id, req_id)]
        future.cancel()
