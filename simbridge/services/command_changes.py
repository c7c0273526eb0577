"""What the relay changes in the `commands` table (contract §7), written behind with the
message log: in the same queue, so a command's row is always inserted before its answer
updates it, and in the same transaction as the log rows of its batch.

A command's row is inserted (`sent`) before the command is handed to its host, so even an
answer that comes back at once finds it; a command that could not be handed over is then
marked `failed` or `queued`. The updates find their row by host and `req_id` (its newest
command with that id still `sent`): the relay never waits for a row's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from simbridge.models import CommandState

_NEWEST_SENT = (
    'SELECT "id" FROM "commands" WHERE "req_id" = {0} AND "host_device_id" = {1}'
    ' AND "state" = \'sent\' ORDER BY "id" DESC LIMIT 1'
)


@dataclass(slots=True)
class NewCommand:
    """A command about to be handed to its host."""

    req_id: str
    user_id: int
    host_id: int
    sender_id: int | None
    cmd: str
    created_at: datetime

    def statement(self, dialect: str) -> tuple[str, list[object]]:
        marks = _marks(dialect, 8)
        sql = (
            'INSERT INTO "commands" ("req_id", "user_id", "host_device_id", "sender_device_id",'
            f' "cmd", "state", "created_at", "updated_at") VALUES ({", ".join(marks)})'
        )
        params = [self.req_id, self.user_id, self.host_id, self.sender_id, self.cmd]
        return sql, [*params, CommandState.SENT.value, self.created_at, self.created_at]


@dataclass(slots=True)
class CommandOutcome:
    """The host's newest `sent` command with this `req_id` was answered (`answer` holds the
    event), or was not handed over after all: `failed`, or `queued` (with its `frame` and
    deadline)."""

    host_id: int
    req_id: str
    state: CommandState
    at: datetime
    answer: str | None = None
    frame: str | None = None
    expires_at: datetime | None = None

    def statement(self, dialect: str) -> tuple[str, list[object]]:
        state, answer, frame, expires, at, req_id, host = _marks(dialect, 7)
        sql = (
            f'UPDATE "commands" SET "state" = {state}, "answer" = {answer}, "frame" = {frame},'
            f' "expires_at" = {expires}, "updated_at" = {at}'
            f' WHERE "id" = ({_NEWEST_SENT.format(req_id, host)})'
        )
        params = [self.state.value, self.answer, self.frame, self.expires_at, self.at]
        return sql, [*params, self.req_id, self.host_id]


CommandChange = NewCommand | CommandOutcome


def _marks(dialect: str, count: int) -> list[str]:
    return ["?"] * count if dialect == "sqlite" else [f"${n}" for n in range(1, count + 1)]
