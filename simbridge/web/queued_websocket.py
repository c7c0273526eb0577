"""Sanic's WebSocket with a receive path that schedules nothing per message.

Sanic hands every read from the socket to a new task, which feeds a frame assembler guarded by
three locks, and each `recv` starts one more task to wait on that assembler: several trips
through the event loop per frame, the largest share of the relay's CPU in profiles. Here a
frame is assembled as soon as it is read, in `data_received`, and complete messages wait in a
short queue that `recv` takes from; while that queue is full the socket is not read, so a peer
that floods is held back by TCP, as with Sanic's own path.

Pings, pongs and the closing handshake still go through Sanic's code unchanged, with one
difference: when the peer closes, the close is answered (and the TCP connection ended) only
once the handler has taken every message read before it. A phone that sends a command and
closes at once still has its command relayed; Sanic would cancel the handler first.

The send path is cheaper too: frames the relay hands over with `send_now` in one turn of the
event loop leave in one `write` at the end of it (a system call per frame was a third of the
relay's CPU in profiles). Every other write (Sanic's `send`, pongs, closes) first writes what
waits, so frames leave in the order they were given.

This object is also the hub's `Connection` for the socket: the handler receives from it and
the relay sends through it, one handle per socket. What it relies on in Sanic goes through
`simbridge.web.sanic_compat`.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Data

from simbridge.web import sanic_compat

INBOX_HIGH = 32  # messages read but not yet taken: stop reading the socket here ...
INBOX_HIGH_BYTES = 256 * 1024  # ... or once they hold this much ...
INBOX_LOW = 8  # ... and read again once the handler is down to this many
UNSENT_HIGH = 16  # frames of a socket waiting for the end of the loop's turn: then written

# Per event loop, the frames `send_now` took in its current turn, per socket: one callback at
# the end of the turn writes them. Kept here rather than on the socket, whose attribute dict
# two more entries would grow by more than 1 KiB (an idle socket costs about 23 KiB).
_unsent: dict[asyncio.AbstractEventLoop, dict[QueuedWebsocket, list[bytes]]] = {}

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class QueuedWebsocket(WebsocketImplProtocol):
    _inbox: deque[Data]
    _waiter: asyncio.Future[Data] | None
    _parts: list[Data]
    _decoder: codecs.IncrementalDecoder | None
    _inbox_bytes: int
    _reading_paused: bool
    _ended: bool
    _handling: bool
    _held: list[Callable[[], Coroutine[Any, Any, None]]]
    _cut_off: asyncio.TimerHandle | None

    @classmethod
    def take_over(cls, ws: WebsocketImplProtocol) -> QueuedWebsocket:
        """Give the socket Sanic has just opened this class's receive path.

        Sanic builds its own class inside its handshake, with no hook to pick another, so the
        object's class is switched before any frame is read (this class adds only methods and
        the fields set here). Dropping Sanic's unused assembler saves about 4 KiB per socket.
        """
        ws.__class__ = cls
        assert isinstance(ws, QueuedWebsocket)
        sanic_compat.drop_assembler(ws)
        ws._inbox = deque()
        ws._waiter = None
        ws._parts = []
        ws._decoder = None
        ws._inbox_bytes = 0
        ws._reading_paused = False
        ws._ended = False
        ws._handling = True  # until its first `recv`, the handler is busy greeting
        ws._held = []
        ws._cut_off = None
        return ws

    # --- reading the socket (called by the transport) ----------------------------------------
    def data_received(self, data: bytes) -> None:
        closing = self.ws_proto.close_sent is not None  # we closed: what the peer sends is moot
        self.ws_proto.receive_data(data)
        data_to_send, control = self._take_events(ignore_data=closing)
        if data_to_send or control:
            self._run_or_hold(partial(sanic_compat.sanic_read_step, self, data_to_send, control))

    def eof_received(self) -> bool | None:
        self._write_unsent()  # the transport closes itself on return: what waits goes first
        self.ws_proto.receive_eof()
        data_to_send, control = self._take_events()
        self._end()
        self._run_or_hold(partial(sanic_compat.sanic_eof_step, self, data_to_send, control))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[no-untyped-call]  # Sanic's, unannotated
        self._write_unsent()  # nothing can be written now: what waits is let go
        self._end()
        if self._cut_off is not None:  # the timer would keep this connection in memory
            self._cut_off.cancel()

    def _run_or_hold(self, sanic_step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run Sanic's handling of what was read, unless it would end a connection whose
        handler is still busy with a message or has more to take: then it waits for
        `_release` (the handler's next `recv`, or `close`)."""
        if self._ended and (self._inbox or self._handling):
            self._held.append(sanic_step)
        else:
            asyncio.create_task(sanic_step())

    def _release(self) -> None:
        held, self._held = self._held, []
        for sanic_step in held:
            asyncio.create_task(sanic_step())

    def _take_events(self, ignore_data: bool = False) -> tuple[list[bytes], list[Frame]]:
        """Queue the messages just read (unless `ignore_data`: we sent a close, and a peer
        that goes on sending after it, such as one whose token was just revoked, is not
        heard); return what Sanic's code must send and handle (replies the protocol wrote,
        such as pongs, and the pong and close frames read)."""
        data_to_send = self.ws_proto.data_to_send()
        control: list[Frame] = []
        for event in self.ws_proto.events_received():
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.PONG, Opcode.CLOSE):
                control.append(event)
                if event.opcode is Opcode.CLOSE:
                    self._end()
            elif event.opcode is not Opcode.PING and not self._ended and not ignore_data:
                self._add_fragment(event)  # text, binary or continuation
        return data_to_send, control

    def _add_fragment(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            self._decoder = _utf8_decoder(errors="strict")
        elif frame.opcode is Opcode.BINARY:
            self._decoder = None
        try:
            part: Data = (
                self._decoder.decode(frame.data, frame.fin) if self._decoder else bytes(frame.data)
            )
        except UnicodeDecodeError:
            self.fail_connection(1007, "invalid UTF-8")
            self._end()
            return
        if not frame.fin:
            self._parts.append(part)
            return
        if self._parts:
            self._parts.append(part)
            part = _joined(self._parts)
            self._parts = []
        self._decoder = None
        self._put(part)

    def _put(self, message: Data) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(message)
            return
        self._inbox.append(message)
        self._inbox_bytes += len(message)
        full = len(self._inbox) >= INBOX_HIGH or self._inbox_bytes >= INBOX_HIGH_BYTES
        transport = self._transport()
        if full and not self._reading_paused and transport is not None:
            self._reading_paused = True
            transport.pause_reading()

    def _end(self) -> None:
        """No more messages will come: wake a `recv` that waits for one."""
        self._ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_exception(self._closed())

    def _closed(self) -> ConnectionClosed:
        proto = self.ws_proto
        return ConnectionClosed(proto.close_rcvd, proto.close_sent, proto.close_rcvd_then_sent)

    # --- the handler's side ------------------------------------------------------------------
    def send_now(self, text: str) -> bool:
        """Take a text frame for writing at the end of this turn of the event loop (with the
        socket's other frames of the turn, in one write) if nothing stands in the way; False
        if something does: the socket is not open, another `send` holds the lock, or the
        transport is over its high-water mark because the peer is not reading (then `send`
        waits for it)."""
        io_proto, loop = self.io_proto, self.loop
        if (
            loop is None
            or self.ws_proto.state is not State.OPEN
            or sanic_compat.send_lock_held(self)
            or io_proto is None
            or io_proto.transport is None
            or io_proto.transport.is_closing()
            or sanic_compat.writing_paused(io_proto)
        ):
            return False
        self.ws_proto.send_text(text.encode())
        unsent = _unsent.get(loop)
        if unsent is None:
            loop.call_soon(_write_unsent_of, loop)
            unsent = _unsent[loop] = {}
        frames = unsent.get(self)
        if frames is None:
            unsent[self] = self.ws_proto.data_to_send()
        else:
            frames.extend(self.ws_proto.data_to_send())
            if len(frames) >= UNSENT_HIGH:  # a burst: let the transport see it (and push back)
                self._write_unsent()
        return True

    def _write_unsent(self) -> None:
        """Write now the frames `send_now` took in this turn, if any."""
        unsent = _unsent.get(self.loop) if self.loop is not None else None
        frames = None if unsent is None else unsent.pop(self, None)
        if frames is not None:
            self._write(frames)

    def _write(self, frames: list[bytes]) -> None:
        """Write `frames` in one call; dropped if the transport closed meanwhile."""
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            try:
                transport.write(b"".join(frames))
            except (RuntimeError, OSError):  # its writing side ended: the connection is over
                transport.abort()

    async def send_data(self, data_to_send: list[bytes]) -> None:
        """Sanic's every asynchronous write (`send`, pongs, closes): after the waiting frames."""
        self._write_unsent()
        await super().send_data(data_to_send)  # type: ignore[no-untyped-call]  # unannotated

    def fail_connection(self, code: int = 1006, reason: str = "") -> bool:
        """Sanic's immediate close, which writes its close frame itself: after the waiting
        frames, as when they were written at once."""
        self._write_unsent()
        failed: bool = super().fail_connection(code, reason)
        return failed

    def end_connection(self, code: int = 1000, reason: str = "") -> bool:
        """Sanic's graceful immediate close, which also writes its frame itself."""
        self._write_unsent()
        ended: bool = super().end_connection(code, reason)  # type: ignore[no-untyped-call]
        return ended

    def abort(self, code: int, reason: str) -> None:
        """Close at once without waiting for the peer (it may have stopped reading)."""
        self.fail_connection(code, reason)

    async def recv_burst(self, max_recv: int = 256) -> Sequence[Data]:
        raise NotImplementedError("QueuedWebsocket has recv only")

    def recv_streaming(self) -> AsyncIterator[Data]:
        raise NotImplementedError("QueuedWebsocket has recv only")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame; a peer that has not answered it within `close_timeout` (it
        may ignore it on purpose) is cut off."""
        self._release()
        await super().close(code, reason)
        if self._cut_off is None and not self._ended:
            loop = asyncio.get_running_loop()
            self._cut_off = loop.call_later(self.close_timeout, self._cut_off_unless_closed)

    def _cut_off_unless_closed(self) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _transport(self) -> asyncio.Transport | None:
        transport: asyncio.Transport | None = self.io_proto.transport if self.io_proto else None
        return transport

    async def receive(self) -> Data:
        """The next message; raises `ConnectionClosed` once the socket is done and drained.

        Messages read before the socket closed are still returned, in order.
        """
        self._handling = False
        if self._inbox:
            message = self._inbox.popleft()
            self._inbox_bytes -= len(message)
            self._handling = True
            if self._reading_paused and len(self._inbox) <= INBOX_LOW:
                self._reading_paused = False
                transport = self._transport()
                if transport is not None and not self._ended:
                    transport.resume_reading()
            return message
        if self._ended:
            self._release()
            raise self._closed()
        waiter: asyncio.Future[Data] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            message = await waiter
        finally:
            if self._waiter is waiter:  # a message that comes later goes to the inbox
                self._waiter = None
        self._handling = True
        return message

    async def recv(self, timeout: float | None = None) -> Data | None:
        """Sanic's `recv`: `receive`, or None once `timeout` seconds pass without a message."""
        try:
            async with asyncio.timeout(timeout):
                return await self.receive()
        except TimeoutError:
            return None


def _joined(parts: list[Data]) -> Data:
    """The parts of a fragmented message (all text or all binary) as one message."""
    texts = [part for part in parts if isinstance(part, str)]
    if texts:
        return "".join(texts)
    return b"".join(part for part in parts if isinstance(part, bytes))


def _write_unsent_of(loop: asyncio.AbstractEventLoop) -> None:
    """The end of a turn of `loop`: each socket writes the frames it took in it."""
    for ws, frames in _unsent.pop(loop, {}).items():
        ws._write(frames)
