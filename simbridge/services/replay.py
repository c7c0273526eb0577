"""The start of a `since` socket (contract §6, §8): greeting, the presence of its paired
devices, replay of what the device missed, then live frames, with nothing lost or sent twice at
the seam.

The socket is attached (made the device's live one) before anything is read, so a frame routed
to it from then on takes a seq and waits in its session (`Session.held`) rather than being sent.
Every frame with a seq up to the one read just after attaching (`latest`) was routed before, so
it is in the message log once the log writer has committed what it holds. The replay is those
rows with the frames that waited meanwhile, merged by seq (a frame both read and held is sent
once); then the frames held while the replay was being written; then the socket goes live. The
presence of the paired devices is read after attaching too: a change after that reading comes
as a live presence frame, after the replay.

A host's queued commands (contract §7) come after the replay and before live frames: they take
the seqs that follow the device's latest, just before it is attached (so every frame routed
later comes after them), and are logged like any frame routed to it and sent with the replay.
The greeting's `seq` is the latest before them: a queued command takes its seq when it is
written, after the greeting.

Across processes (`SIMBRIDGE_BROKER=redis`, `replay_kept`) the kept frames are in Redis, not in
the log: the socket is attached and claimed (so every frame kept for the device from then on is
published to it, and held), then one script call appends the queued commands and reads the
latest seq with the frames up to it; the merge with what was held is the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from simbridge import protocol
from simbridge.config import Settings
from simbridge.hub import Hub, Session
from simbridge.services.inbox import kept_frames
from simbridge.services.message_log import MessageLogWriter
from simbridge.services.redis_inboxes import RedisInboxes
from simbridge.services.sequences import Sequences


async def replay_inbox(
    session: Session,
    hub: Hub,
    sequences: Sequences,
    writer: MessageLogWriter,
    settings: Settings,
    presence: Callable[[], Awaitable[list[str]]],
    queued: Sequence[tuple[int | None, str]] = (),
) -> None:
    """Attach the `since` socket of `session`, greet it, tell it which paired devices are
    online (`presence`: their presence frames), replay its inbox and then the `queued`
    commands ((sender, frame), oldest first), then let it go live."""
    device_id, since = session.device_id, session.since
    assert since is not None
    await sequences.latest(device_id)  # read the counter now: `current` below must not wait
    if queued:
        await sequences.ready(device_id, len(queued))
    greeted = sequences.current(device_id)  # the latest before the queued commands
    numbered = [(sequences.take(device_id), command) for command in queued]
    session.held = []
    await hub.attach(session)
    latest = sequences.current(device_id)
    for number, (sender_id, frame) in numbered:
        await writer.write(sender_id, device_id, protocol.COMMAND, frame, number)
    peers = await presence()
    await writer.flush()  # every frame with a seq up to `latest` is in the log now
    rows = await kept_frames(device_id, since, latest, settings)
    replay = {seq: protocol.with_seq(payload, seq) for seq, payload in rows}
    _add_queued(replay, [(number, frame) for number, (_, frame) in numbered])
    await _greet_and_replay(session, greeted if numbered else latest, latest, replay, peers)


async def replay_kept(
    session: Session,
    hub: Hub,
    claim: Callable[[], Awaitable[None]],
    inboxes: RedisInboxes,
    writer: MessageLogWriter,
    presence: Callable[[], Awaitable[list[str]]],
    queued: Sequence[tuple[int | None, str]] = (),
) -> None:
    """`replay_inbox` across processes (`SIMBRIDGE_BROKER=redis`): the socket is attached
    here and then claimed everywhere (`claim`), so every frame kept from then on, by any
    process, is published to it and waits in its session; then one script call reads the
    latest seq and the kept frames up to it (appending the `queued` commands first), so a frame
    is either read there or published here, or both (sent once), never neither. Raises
    `BrokerUnavailable` (the socket is attached, not greeted)."""
    device_id, since = session.device_id, session.since
    assert since is not None
    session.held = []
    await hub.attach(session)
    await claim()
    opened = await inboxes.open(device_id, since, [frame for _, frame in queued])
    latest = opened.latest
    for number, (sender_id, frame) in zip(opened.numbered, queued, strict=True):
        await writer.write(sender_id, device_id, protocol.COMMAND, frame, number)
    peers = await presence()
    replay = {seq: protocol.with_seq(payload, seq) for seq, payload in opened.frames}
    _add_queued(replay, list(zip(opened.numbered, (frame for _, frame in queued), strict=True)))
    await _greet_and_replay(session, opened.greeted, latest, replay, peers)


def _add_queued(replay: dict[int, str], numbered: list[tuple[int, str]]) -> None:
    """The queued commands follow the replay whatever `since` was (contract §6): a host asking
    for nothing older than a seq beyond its latest still gets them, with their new seqs."""
    for number, frame in numbered:
        replay.setdefault(number, protocol.with_seq(frame, number))


async def _greet_and_replay(
    session: Session, greeted: int, latest: int, replay: dict[int, str], peers: list[str]
) -> None:
    """Merge what was read (`replay`, up to `latest`) with what waited in the session, then
    send the greeting, `peers`' presence, the replay, the live frames that waited, and go live."""
    since = session.since
    assert since is not None
    live: list[str] = []
    for seq, frame in _take(session):
        if seq is None or seq > latest:
            live.append(frame)
        elif seq > since:
            replay.setdefault(seq, frame)  # routed just before `latest` was read
    gap = since < latest and len(replay) < latest - since
    conn = session.conn
    await conn.send(protocol.connected_since(session.device_id, greeted, gap))
    for frame in peers:
        await conn.send(frame)
    for seq in sorted(replay):
        await conn.send(replay[seq])
    for frame in live:
        await conn.send(frame)
    await go_live(session)


async def go_live(session: Session) -> None:
    """Send the frames held for the session while it was being started, then let frames
    through. Each round sends what came during the last one; senders are rate-limited (per
    device, per REST caller), so the rounds shrink."""
    while session.held:
        for _, frame in _take(session):
            await session.conn.send(frame)
    session.held = None  # nothing awaited since the last check: live from here on


def _take(session: Session) -> list[tuple[int | None, str]]:
    """The frames held so far, in the order routed; the session keeps holding new ones."""
    held, session.held = session.held or [], []
    return held
