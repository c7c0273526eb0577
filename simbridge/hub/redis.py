"""`RedisBroker`: the `Broker` of several processes (nodes) sharing one Redis.

Each node has an id, a liveness key that its heartbeat keeps alive, and a channel of its own.
A device's owner (node, generation) is one hash; a frame for a device held by another node
costs one script call that finds the owner, checks that its node is alive and publishes to
that node's channel, so no node receives frames for devices it does not hold.

Keys and channels (`p` is the prefix, `sb:` by default):

    p node:<nid>      STRING, PX node TTL     the node is alive (value: pid@host, for operators)
    p dev:<device>    HASH node, gen          owner of the device's live socket
    p gen             counter                 generations, increasing across all devices
    p user:<user>     SET device ids          the user's devices that may be live (socket cap)
    p ch:node:<nid>   channel                 f<device>:<gen>:<frame>, c<device>:<gen>:<command
                                              with its asker>, r<device>:<gen>, p<nonce>
    p ch:ctl          channel                 control messages, JSON, for every node
    p inbox:<d>:n     HASH s, r               the device's latest seq, and its reserved mark
    p inbox:<d>       STREAM <seq>-0 {t, f}   its kept frames (contract §6), capped, with TTL

A kept frame (`keep`) takes its seq, is appended to its device's inbox and published to the
owner's node in one script call; it travels as F<device>:<gen>:<seq>:<frame> (C<...> for a
command with its asker). `open_inbox` appends a host's queued commands and reads what a `since`
socket missed, atomically; the seeding and reserving of counters (`seed_inbox`,
`reserve_inbox`) is `simbridge.services.redis_inboxes`'s business.

Scripts derive node keys from the owner they read, so this layout needs one Redis, not a
Cluster. Pub/Sub is at-most-once: after the subscription is lost (reconnect, silent probe) or
the node's key was (Redis restart, a paused process), the node resyncs: it sets its key again,
re-claims its sockets and tells the runtime (`on_resync`) to flush what it cached.

Who asked a host each request is not stored in Redis: a command travels to the host's node with
its asker, and that node's hub remembers it (so a frame costs one Redis call, and a frame
between two devices of one node none).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from simbridge.hub.broker import BrokerUnavailable, ControlHandler
from simbridge.hub.control import Control
from simbridge.hub.local import Hub
from simbridge.hub.open_requests import Asked
from simbridge.hub.redis_commands import UNREACHABLE, CommandBatcher, connect_to, pack_commands
from simbridge.hub.redis_messages import (
    decode_command,
    decode_control,
    encode_command,
    encode_control,
)
from simbridge.hub.session import Session
from simbridge.protocol import CLOSE_REPLACED

log = logging.getLogger("simbridge.hub.redis")

EXIT_LISTENER_DIED = 70  # EX_SOFTWARE: a node that stopped listening must not go on serving
MAX_QUEUED_FRAMES = 1000  # per device whose socket is behind; more are dropped (it is aborted soon)
MIN_RECONNECT_PAUSE = 0.05
MAX_UNPUBLISHED_CONTROLS = 10_000  # kept while Redis is away; older ones are dropped first


async def _nothing() -> None:
    return None


# --- the broker -------------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class _Claim:
    """This node's claim of a device: the socket it was made for, and the generation Redis
    gave it (a future until Redis answers)."""

    session: Session
    gen: asyncio.Future[int]

    def settled_gen(self) -> int:
        """The generation, or 0 while Redis has not answered (or if the claim failed)."""
        gen = self.gen
        if not gen.done() or gen.exception() is not None:
            return 0
        return gen.result()


class RedisBroker:
    """The broker of one node among several sharing the Redis at `url`.

    `prefix` namespaces every key and channel (tests isolate themselves with it). Timings:
    the node's key lives `node_ttl_seconds` and is refreshed every `heartbeat_seconds` (a node
    killed without closing has its devices offline everywhere within the TTL); every
    `probe_seconds` the node publishes to itself and subscribes again if that does not come
    back within `probe_timeout_seconds`; a command gets `command_timeout_seconds`; subscribing
    again after a failure waits up to `max_reconnect_pause_seconds`. `on_resync` runs after each
    resync that follows a lost subscription or a lost node key; `exit_process` is how the node
    exits when a task it cannot serve without (listener, heartbeat, probe) died of a bug.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sb:",
        heartbeat_seconds: float = 2.0,
        node_ttl_seconds: float = 7.0,
        probe_seconds: float = 5.0,
        probe_timeout_seconds: float = 2.0,
        command_timeout_seconds: float = 2.0,
        max_reconnect_pause_seconds: float = 1.0,
        max_sockets_per_user: int = 50,
        on_resync: Callable[[], Awaitable[None]] = _nothing,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        if node_ttl_seconds <= heartbeat_seconds:
            raise ValueError("the node TTL must be longer than the heartbeat interval")
        self.node_id = uuid.uuid4().hex
        self._prefix = prefix
        self._max_sockets = max_sockets_per_user
        self._heartbeat_seconds = heartbeat_seconds
        self._node_ttl_ms = int(node_ttl_seconds * 1000)
        self._probe_seconds = probe_seconds
        self._probe_timeout = probe_timeout_seconds
        self._command_timeout = command_timeout_seconds
        self._max_pause = max_reconnect_pause_seconds
        self._on_resync = on_resync
        self._exit_process = exit_process
        self._node_key = f"{prefix}node:{self.node_id}"
        self._node_value = f"{os.getpid()}@{socket.gethostname()}"
        self._node_channel = f"{prefix}ch:node:{self.node_id}"
        self._control_channel = f"{prefix}ch:ctl"
        # RESP2: RESP3 with hiredis leaks memory per push message (hiredis-py #235). No retries
        # inside redis-py: a failure reaches this broker, which knows what to do about it.
        commands = connect_to(
            url,
            protocol=2,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=None,  # each round trip has a timeout of its own
            socket_connect_timeout=command_timeout_seconds,
            client_name=f"simbridge-{self.node_id}",
        )
        # The subscription's own connection, without a socket timeout: it waits for messages
        # indefinitely (the probe finds one that went silent). This broker subscribes on it
        # and reads it (redis-py's PubSub would resubscribe behind its back after a reconnect,
        # and costs more CPU per message than the rest of receiving a frame).
        self._subscriber = connect_to(
            url,
            protocol=2,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=None,
            socket_connect_timeout=command_timeout_seconds,
            socket_keepalive=True,
            client_name=f"simbridge-sub-{self.node_id}",
        )
        self._redis = CommandBatcher(commands, command_timeout_seconds)
        self._hub: Hub | None = None
        self._on_control: ControlHandler | None = None
        self._claims: dict[int, _Claim] = {}  # the latest claim of each device held here
        self._unreleased: dict[int, int] = {}  # releases Redis missed, sent again at resync
        self._unpublished: deque[str] = deque(maxlen=MAX_UNPUBLISHED_CONTROLS)  # likewise
        # frames (and seqs) for devices whose socket is behind
        self._sending: dict[int, deque[tuple[str, int | None]]] = {}
        self._controls: asyncio.Queue[Control] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        self._read_scope: asyncio.Timeout | None = None
        self._resync_lock = asyncio.Lock()
        self._resync_owed = False
        self._serving = False
        self._probe_nonce = 0
        self._probe_heard = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[Any]] = set()

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, hub: Hub, on_control: ControlHandler) -> None:
        """Subscribe and start the heartbeat and the probe. When Redis cannot be reached within
        the command timeout, serve anyway: this process's own sockets work, and the node
        joins the others (resync, `on_resync`) as soon as Redis answers."""
        self._hub = hub
        self._on_control = on_control
        for loop in (self._listen(), self._heartbeat(), self._probe()):
            task = asyncio.create_task(loop)
            task.add_done_callback(self._exit_if_died)
            self._tasks.append(task)
        self._spawn(self._apply_controls())
        try:
            async with asyncio.timeout(self._command_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            log.error("Redis is unreachable: serving this process's own sockets until it is back")
        self._serving = True

    async def stop(self) -> None:
        """Stop listening, then give up in Redis what this node holds: its devices and its key,
        so that every other node sees them offline at once."""
        tasks = self._tasks + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        releases = [
            self._release(device, claim.settled_gen()) for device, claim in self._claims.items()
        ]
        try:
            await asyncio.gather(*releases, self._redis.call("DEL", self._node_key))
        except BrokerUnavailable as exc:
            log.warning("could not release this node's devices (%s): they expire with its key", exc)
        self._claims.clear()
        await self._redis.close()
        await self._subscriber.disconnect()

    async def check(self) -> bool:
        """Whether Redis answers and this node is subscribed (for the health endpoint)."""
        try:
            await self._redis.call("PING")
        except BrokerUnavailable:
            return False
        return self._subscribed.is_set()

    def available(self) -> bool:
        """Subscribed: Redis answered since the subscription last failed."""
        return self._subscribed.is_set()

    # --- ownership --------------------------------------------------------------------------
    async def claim(self, device_id: int) -> None:
        """Own the device here with a new generation; the node that held it, if alive, closes
        its socket with 4000. Raises `BrokerUnavailable` if Redis cannot be reached (the socket
        stays here, and is claimed again at the next resync unless released before)."""
        session = self._started_hub().session_of(device_id)
        if session is None:
            return  # its socket is gone already
        self._unreleased.pop(device_id, None)
        gen = self._redis.evalsha(
            "CLAIM",
            [self._device_key(device_id), f"{self._prefix}gen", self._user_key(session.user_id)],
            self._prefix,
            self.node_id,
            device_id,
        )
        self._claims[device_id] = _Claim(session, gen)
        await asyncio.shield(gen)  # a cancelled handshake must not lose the generation

    async def release(self, device_id: int) -> None:
        """Give up the device's ownership unless it is no longer this node's (compare on node
        and generation), or a newer socket of the device is here."""
        if self._started_hub().holds(device_id):
            return
        claim = self._claims.pop(device_id, None)
        if claim is not None:
            await self._release(device_id, claim.settled_gen())

    async def _release(self, device_id: int, gen: int) -> None:
        try:
            await self._redis.evalsha("RELEASE", [self._device_key(device_id)], self.node_id, gen)
        except BrokerUnavailable:
            self._unreleased[device_id] = gen

    async def has_room(self, user_id: int, device_id: int) -> bool:
        """Whether the user has fewer than the cap of sockets for other devices, on every node
        (this node's count alone while Redis cannot be reached)."""
        try:
            room = await self._redis.evalsha(
                "ROOM", [self._user_key(user_id)], self._prefix, device_id, self._max_sockets
            )
        except BrokerUnavailable:
            return self._started_hub().has_room(user_id, device_id)
        return bool(room)

    # --- delivery and presence --------------------------------------------------------------
    async def deliver(self, device_id: int, frame: str, asked: Asked | None = None) -> bool:
        """Publish to the owner's node in one script call; False when no live node holds the
        device or Redis cannot be reached."""
        kind, payload = ("f", frame) if asked is None else ("c", encode_command(frame, asked))
        try:
            receivers = await self._redis.evalsha(
                "DELIVER",
                [self._device_key(device_id)],
                self._prefix,
                self.node_id,
                device_id,
                kind,
                payload,
            )
        except BrokerUnavailable:
            return False
        return bool(receivers)

    async def online(self, device_ids: Iterable[int]) -> set[int]:
        """Those live here, and, in one script call, those live on other nodes (only those
        here while Redis cannot be reached)."""
        wanted = list(device_ids)
        here = self._started_hub().online(wanted)
        elsewhere = [device_id for device_id in wanted if device_id not in here]
        if not elsewhere:
            return here
        keys = [self._device_key(device_id) for device_id in elsewhere]
        try:
            flags = await self._redis.evalsha("ONLINE", keys, self._prefix, self.node_id)
        except BrokerUnavailable:
            return here
        return here | {device_id for device_id, flag in zip(elsewhere, flags, strict=True) if flag}

    # --- kept frames (contract §6) -----------------------------------------------------------
    async def keep(
        self,
        device_id: int,
        frame: str,
        asked: Asked | None,
        *,
        event: bool,
        here: bool,
        now_ms: int,
        ttl_ms: int,
        max_kept: int,
    ) -> list[int]:
        """Give the frame the device's next seq, keep it in its inbox and publish it to the
        owner's node, in one script call (see `KEEP` for what comes back). `here`: the device
        has a socket on this node, which sends it the frame itself unless another live node
        owns the device. Raises `BrokerUnavailable`."""
        kind, asker = ("F", "") if asked is None else ("C", encode_command("", asked))
        result = await self._redis.evalsha(
            "KEEP",
            [self._device_key(device_id), *self._inbox_keys(device_id)],
            self._prefix,
            self.node_id,
            device_id,
            kind,
            asker,
            frame,
            1 if event else 0,
            1 if here else 0,
            now_ms,
            ttl_ms,
            max_kept,
        )
        return [int(value) for value in result]

    async def open_inbox(
        self,
        device_id: int,
        since: int,
        frames: list[str],
        *,
        now_ms: int,
        ttl_ms: int,
        max_kept: int,
    ) -> list[Any]:
        """Append `frames` with the device's next seqs, then read its entries after `since`
        (-1: none), in one script call (see `OPEN`). Raises `BrokerUnavailable`."""
        result: list[Any] = await self._redis.evalsha(
            "OPEN", self._inbox_keys(device_id), since, now_ms, ttl_ms, max_kept, *frames
        )
        return result

    async def seed_inbox(self, device_id: int, latest: int, reserved: int) -> None:
        """Start the device's counter at `latest`, reserved up to `reserved`, unless it has
        one already."""
        await self._redis.evalsha("SEED", self._inbox_keys(device_id)[:1], latest, reserved)

    async def reserve_inbox(self, device_id: int, reserved: int) -> None:
        """Let the device's counter go up to `reserved` (already written to the database)."""
        await self._redis.evalsha("RESERVE", self._inbox_keys(device_id)[:1], reserved)

    async def forget_inbox(self, device_id: int) -> None:
        """Delete a removed device's counter and kept frames now, not when their TTL ends."""
        await self._redis.call("DEL", *self._inbox_keys(device_id))

    def _inbox_keys(self, device_id: int) -> list[str]:
        inbox = f"{self._prefix}inbox:{device_id}"
        return [f"{inbox}:n", inbox]

    # --- control ----------------------------------------------------------------------------
    async def broadcast(self, control: Control) -> None:
        """Apply `control` here first, then publish it to every other node. While Redis cannot
        be reached it is kept, and published at this node's next resync: a node cut off alone
        must not leave the others acting on what it revoked (they may never resync)."""
        if self._on_control is None:
            raise RuntimeError("RedisBroker.broadcast before start")
        await self._on_control(control)
        message = encode_control(self.node_id, control)
        try:
            await self._redis.call("PUBLISH", self._control_channel, message)
        except BrokerUnavailable:
            self._unpublished.append(message)  # bounded: the oldest go first
            log.warning("node %s: control message kept until Redis is back", self.node_id)

    async def _apply_controls(self) -> None:
        """Control messages from other nodes, one at a time, in the order they came."""
        assert self._on_control is not None
        while True:  # until stopped
            control = await self._controls.get()
            try:
                await self._on_control(control)
            except Exception:
                log.exception("control message %r failed", control)

    # --- listening --------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Subscribe, resync, then read until the subscription fails or the probe finds it
        silent; then again, after a pause that grows while Redis stays unreachable."""
        pause = MIN_RECONNECT_PAUSE
        while True:  # until stopped
            try:
                async with asyncio.timeout(None) as self._read_scope:
                    await self._subscribe()
                    await self._resync(announce=self._serving)
                    self._subscribed.set()
                    pause = MIN_RECONNECT_PAUSE
                    await self._read()
            except TimeoutError:
                log.warning(
                    "node %s: the subscription went silent; subscribing again", self.node_id
                )
            except (BrokerUnavailable, *UNREACHABLE) as exc:
                log.warning("node %s: subscription lost (%s); subscribing again", self.node_id, exc)
            finally:
                self._subscribed.clear()
                self._read_scope = None
                await self._subscriber.disconnect(nowait=True)  # the next round subscribes anew
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._max_pause)

    async def _subscribe(self) -> None:
        """Connect and subscribe; returns once Redis confirmed both channels."""
        subscriber = self._subscriber
        command = ("SUBSCRIBE", self._node_channel, self._control_channel)
        await subscriber.send_packed_command(pack_commands([command]), check_health=False)
        confirmed = 0
        while confirmed < 2:  # a message may come between the two confirmations
            message = await subscriber.read_response(timeout=math.inf)
            if message[0] == "subscribe":
                confirmed += 1
            else:
                self._dispatch(message)

    async def _read(self) -> None:
        """Blocking reads, one message each (no polling)."""
        subscriber = self._subscriber
        while True:  # until the connection fails or the probe ends the read scope
            self._dispatch(await subscriber.read_response(timeout=math.inf))

    def _dispatch(self, message: list[str]) -> None:
        """Never awaits: what may take time (a slow socket, closing one) runs in a task."""
        try:
            kind, channel, data = message
            if kind != "message":
                return
            if channel == self._control_channel:
                node, control = decode_control(data)
                if node != self.node_id:
                    self._controls.put_nowait(control)
                return
            head, _, rest = data.partition(":")
            kind = head[:1]
            if kind == "f":
                gen, _, frame = rest.partition(":")
                self._on_frame(int(head[1:]), int(gen), frame)
            elif kind == "c":
                gen, _, command = rest.partition(":")
                asked, frame = decode_command(command)
                self._on_frame(int(head[1:]), int(gen), frame, asked)
            elif kind in ("F", "C"):  # a kept frame, with its seq
                gen, _, rest = rest.partition(":")
                seq, _, body = rest.partition(":")
                asked, frame = decode_command(body) if kind == "C" else (None, body)
                self._on_frame(int(head[1:]), int(gen), frame, asked, int(seq))
            elif kind == "r":
                self._on_replaced(int(head[1:]), int(rest))
            elif kind == "p" and head[1:] == str(self._probe_nonce):
                self._probe_heard.set()
        except (ValueError, KeyError, TypeError):
            log.error("malformed message ignored: %.200r", message)

    def _on_frame(
        self,
        device_id: int,
        gen: int,
        frame: str,
        asked: Asked | None = None,
        seq: int | None = None,
    ) -> None:
        """Hand the frame to the device's socket here, in order, without waiting on it (a
        command's asker is remembered first: the host's answer may come at once). A kept
        frame's `seq` goes with it (`Hub.offer`)."""
        claim = self._claims.get(device_id)
        if claim is not None and gen < claim.settled_gen():
            return  # routed to a socket of the device that a newer one here has replaced
        if asked is not None:
            self._started_hub().remember_request(device_id, *asked)
        queue = self._sending.get(device_id)
        if queue is not None:
            if len(queue) < MAX_QUEUED_FRAMES:
                queue.append((frame, seq))
            return
        if self._started_hub().offer(device_id, frame, seq):
            return  # sent, held or gone: the common case, without a task (as in Hub.send)
        self._sending[device_id] = deque([(frame, seq)])
        self._spawn(self._drain(device_id))

    async def _drain(self, device_id: int) -> None:
        """Send a device's queued frames one by one; a socket that stopped reading is aborted
        by the hub after its send timeout, and the rest then go nowhere at once."""
        queue = self._sending[device_id]
        try:
            while queue:  # bounded by what was queued, each send by the hub's send timeout
                await self._started_hub().send(device_id, *queue[0])
                queue.popleft()
        finally:
            del self._sending[device_id]

    def _on_replaced(self, device_id: int, gen: int) -> None:
        claim = self._claims.get(device_id)
        if claim is not None:
            self._spawn(self._yield_if_older(device_id, claim, gen))

    async def _yield_if_older(self, device_id: int, claim: _Claim, gen: int) -> None:
        """Another node claimed the device with `gen`: close the socket here with 4000 unless
        it was claimed after that (its claim's answer may still be on its way)."""
        try:
            here = await asyncio.shield(claim.gen)
        except BrokerUnavailable:
            here = 0
        current = self._claims.get(device_id)
        if current is not None and current is not claim and current.session is claim.session:
            claim, here = current, current.settled_gen()  # the same socket, re-claimed at a resync
        if here < gen:
            await self._give_up(device_id, claim)

    async def _give_up(self, device_id: int, claim: _Claim) -> None:
        """The device is another node's now: close the socket of that claim with 4000 (not a
        newer socket of the device here: its own claim is on its way)."""
        if self._claims.get(device_id) is not claim:
            return
        del self._claims[device_id]
        hub = self._started_hub()
        if hub.session_of(device_id) is claim.session:
            await hub.close_matching([claim.session], CLOSE_REPLACED, "replaced")

    # --- staying in sync --------------------------------------------------------------------
    async def _resync(self, announce: bool) -> None:
        """Make Redis agree with this node again: its key, the claims of the sockets it holds
        (a device now owned by another live node is closed here with 4000), the releases Redis
        missed. Then `on_resync`, so the runtime flushes what broadcasts it may have missed."""
        async with self._resync_lock:
            await self._redis.load_scripts()
            await self._redis.call("SET", self._node_key, self._node_value, "PX", self._node_ttl_ms)
            hub = self._started_hub()
            held = [
                (device, claim)
                for device, claim in self._claims.items()
                if hub.session_of(device) is claim.session  # else a newer claim is on its way
            ]
            unreleased = list(self._unreleased.items())
            gen_key = f"{self._prefix}gen"
            gens = await asyncio.gather(
                *(
                    self._redis.evalsha(
                        "RECLAIM",
                        [self._device_key(device), gen_key, self._user_key(claim.session.user_id)],
                        self._prefix,
                        self.node_id,
                        claim.settled_gen(),
                        device,
                    )
                    for device, claim in held
                ),
                *(
                    self._redis.evalsha("RELEASE", [self._device_key(device)], self.node_id, gen)
                    for device, gen in unreleased
                ),
            )
            for (device, claim), gen in zip(held, gens[: len(held)], strict=True):
                if self._claims.get(device) is not claim:
                    continue  # claimed again meanwhile: that claim is the newer one
                if gen:
                    self._claims[device] = _Claim(claim.session, _settled(gen))
                else:
                    self._spawn(self._give_up(device, claim))
            for device, gen in unreleased:
                if self._unreleased.get(device) == gen:
                    del self._unreleased[device]
            while self._unpublished:  # in order; one that fails again stays for the next resync
                await self._redis.call("PUBLISH", self._control_channel, self._unpublished[0])
                self._unpublished.popleft()
            self._resync_owed = False
            log.info("node %s resynced: %d sockets re-claimed", self.node_id, len(held))
        if announce:  # in a task: frames keep flowing while the runtime checks its sessions
            self._spawn(self._on_resync())

    async def _heartbeat(self) -> None:
        """Keep the node's key alive; finding it gone (Redis restarted, or this process was
        paused past the TTL and others may have claimed its devices) means a resync."""
        while True:  # until stopped
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                previous = await self._redis.call(
                    "SET", self._node_key, self._node_value, "PX", self._node_ttl_ms, "GET"
                )
                if previous is None:
                    log.warning("node %s: its key had expired; resyncing", self.node_id)
                    self._resync_owed = True
                if self._resync_owed and self._subscribed.is_set():
                    await self._resync(announce=True)
                await self._release_abandoned()
            except BrokerUnavailable as exc:  # the next beat finds out whether the key survived
                log.debug("heartbeat of node %s failed: %s", self.node_id, exc)

    async def _release_abandoned(self) -> None:
        """Release the devices whose socket the hub dropped without a release (a send that
        timed out detaches it there), so that others do not see them online for long."""
        hub = self._started_hub()
        abandoned = [device for device in self._claims if not hub.holds(device)]
        for device in abandoned:
            log.info(
                "node %s: device %s left without a release; releasing it", self.node_id, device
            )
        await asyncio.gather(*(self.release(device) for device in abandoned))

    async def _probe(self) -> None:
        """Publish to this node's own channel; a subscription that does not hear it within the
        timeout (or that Redis does not count) is restarted."""
        while True:  # until stopped
            await asyncio.sleep(self._probe_seconds)
            if not self._subscribed.is_set():
                continue  # the listener is subscribing again already
            self._probe_nonce += 1
            self._probe_heard.clear()
            try:
                receivers = await self._redis.call(
                    "PUBLISH", self._node_channel, f"p{self._probe_nonce}"
                )
            except BrokerUnavailable:
                continue  # the listener finds out on its own connection
            if receivers:
                try:
                    async with asyncio.timeout(self._probe_timeout):
                        await self._probe_heard.wait()
                    continue
                except TimeoutError:
                    pass
            if self._subscribed.is_set() and self._read_scope is not None:  # still that one
                self._read_scope.reschedule(asyncio.get_running_loop().time())

    # --- helpers ----------------------------------------------------------------------------
    def _exit_if_died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        log.critical(
            "node %s: a broker task ended; exiting rather than serving deaf",
            self.node_id,
            exc_info=task.exception(),
        )
        self._exit_process(EXIT_LISTENER_DIED)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("broker task failed", exc_info=task.exception())

    def _user_key(self, user_id: int) -> str:
        return f"{self._prefix}user:{user_id}"

    def _device_key(self, device_id: int) -> str:
        return f"{self._prefix}dev:{device_id}"

    def _started_hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("RedisBroker used before start")
        return self._hub


def _settled(gen: int) -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(gen)
    return future
