"""Talking to Redis for `RedisBroker`: commands of one event-loop turn in one write, replies
read in order, every failure as `BrokerUnavailable`.

redis-py's `Pipeline` and `PubSub` are not used: a plain connection each (RESP2, no retries
inside redis-py) halved the CPU per cross-process frame, and the broker, not redis-py, decides
what to do after a failure (no silent re-subscribe). Checked against redis-py 5.2 to 8.1.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from simbridge.hub.broker import BrokerUnavailable
from simbridge.hub.redis_scripts import SCRIPTS, SHA

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class CommandBatcher:
    """Sends the commands issued in one event-loop turn in one write on one connection, one
    batch in flight at a time: commands reach Redis in the order they were issued, and under
    load one round trip carries many (measured: a frame sent to another node costs ~10 us of
    the sender's CPU that way, ~100 us when each waits for its own round trip).

    Every failure reaches the caller as `BrokerUnavailable`.
    """

    def __init__(self, connection: AbstractConnection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._in_flight: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def call(self, *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(BrokerUnavailable("the broker stopped"))
            return future
        self._queue.append((args, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return future

    def evalsha(self, script: str, keys: list[str], *args: Any) -> asyncio.Future[Any]:
        return self.call("EVALSHA", SHA[script], len(keys), *keys, *args)

    async def load_scripts(self) -> None:
        await asyncio.gather(*(self.call("SCRIPT", "LOAD", src) for src in SCRIPTS.values()))

    async def close(self) -> None:
        """Stop sending; whoever still waits gets `BrokerUnavailable`."""
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for _, future in self._in_flight + self._queue:
            if not future.done():
                future.set_exception(BrokerUnavailable("the broker stopped"))
        self._queue = []
        await self._connection.disconnect()

    async def _flush(self) -> None:
        try:
            while self._queue:  # ends after a round trip during which nothing was issued
                self._in_flight, self._queue = self._queue, []
                await self._send(self._in_flight)
                self._in_flight = []
        finally:
            self._flusher = None

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([args for args, _ in batch])
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:  # Redis restarted or its script cache was flushed: load, then again
                scripts = [("SCRIPT", "LOAD", source) for source in SCRIPTS.values()]
                again = await self._execute(scripts + [batch[i][0] for i in missing])
                for i, result in zip(missing, again[len(scripts) :], strict=True):
                    results[i] = result
        except UNREACHABLE as exc:
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, (RedisError, OSError)):
                future.set_exception(BrokerUnavailable(f"{type(result).__name__}: {result}"))
            else:
                future.set_result(result)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One write, then the replies in order (an error reply is returned, not raised). The
        connection is this batcher's alone, and reconnects on the next write after a failure."""
        connection = self._connection
        try:
            async with asyncio.timeout(self._timeout):  # one timer for the whole round trip
                await connection.send_packed_command(pack_commands(commands), check_health=False)
                results: list[Any] = []
                for _ in commands:
                    try:
                        results.append(await connection.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        results.append(exc)
                return results
        except BaseException:
            await connection.disconnect(nowait=True)  # a reply may be half read: start afresh
            raise


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """The commands in RESP, in one buffer (redis-py's general packer costs more CPU than the
    rest of a round trip; these arguments are only strings and integers)."""
    out = bytearray()
    for args in commands:
        out += b"*%d\r\n" % len(args)
        for arg in args:
            data = str(arg).encode()
            out += b"$%d\r\n%b\r\n" % (len(data), data)
    return bytes(out)


def connect_to(url: str, **options: Any) -> AbstractConnection:
    """A connection of its own (no pool) to the Redis at `url`."""
    kwargs: dict[str, Any] = {**parse_url(url), **options}
    connection_class: type[AbstractConnection] = kwargs.pop("connection_class", Connection)
    return connection_class(**kwargs)
