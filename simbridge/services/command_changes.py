"""What the relay changes in the `commands` table (contract §7), written behind with the
message log: in the same queue, so a command's row is always inserted before its answer
updates it, and in the same transaction as the log rows of its batch.

A command's row is inserted once its fate is known (handed to its host, refused, or queued),
with that state; an answer that comes back before then, or soon after, is written with it
(see `Commands.handing_over`, `Commands.delivered`). Later changes find their row by
host and `req_id` (its newest command with that id in the state they change): the relay never
waits for a row's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from simbridge.models import CommandState

_INSERT = (
    'INSERT INTO "commands" ("req_id", "user_id", "host_device_id", "sender_device_id", "cmd",'
    ' "state", "answer", "frame", "expires_at", "created_at", "updated_at")'
    " VALUES ({})"
)
# Answers, many to a statement: each sets its host's newest `sent` command with its req_id.
_ANSWERS = (
    'UPDATE "commands" SET "state" = \'answered\', "answer" = v.column3, "updated_at" = v.column4'
    " FROM (VALUES {}) AS v"
    ' WHERE "commands"."id" = (SELECT c."id" FROM "commands" AS c'
    ' WHERE c."req_id" = v.column1 AND c."host_device_id" = v.column2'
    ' AND c."state" = \'sent\' ORDER BY c."id" DESC LIMIT 1)'
)
# PostgreSQL types a VALUES list's parameters as text unless told
_POSTGRES_ANSWER = "(${}::text, ${}::int, ${}::text, ${}::timestamptz)"


@dataclass(slots=True)
class NewCommand:
    """A command whose fate is known: `state` is sent, answered (with `answer`), failed, or
    queued (with its `frame` and deadline)."""

    req_id: str
    user_id: int
    host_id: int
    sender_id: int | None
    cmd: str
    state: CommandState
    created_at: datetime
    answer: str | None = None
    frame: str | None = None
    expires_at: datetime | None = None

    def values(self) -> tuple[object, ...]:
        """The row, in the column order of the INSERT."""
        return self._row(self.created_at, self.expires_at)

    def sqlite_values(self) -> tuple[object, ...]:
        """The row for SQLite, its timestamps already text: `created_at` is formatted once for
        both columns rather than by the sqlite3 adapter for each (the writer thread holds the
        GIL while it binds, so the event loop waits for every adapter call)."""
        expires_at = None if self.expires_at is None else sqlite_stamp(self.expires_at)
        return self._row(sqlite_stamp(self.created_at), expires_at)

    def _row(self, created_at: object, expires_at: object) -> tuple[object, ...]:
        return (
            self.req_id,
            self.user_id,
            self.host_id,
            self.sender_id,
            self.cmd,
            self.state.value,
            self.answer,
            self.frame,
            expires_at,
            created_at,
            created_at,  # updated_at
        )


def sqlite_stamp(at: datetime) -> str:
    """A timestamp as Tortoise's SQLite adapter writes it (`isoformat(" ")`), so rows written
    here sort and compare with the rows Tortoise writes."""
    return at.isoformat(" ")


COLUMNS = 11


def insert_commands(dialect: str, rows: int) -> str:
    """One INSERT of `rows` new commands."""
    if dialect == "sqlite":
        return _INSERT.format("), (".join([", ".join("?" * COLUMNS)] * rows))
    return _INSERT.format(", ".join(_marks(dialect, COLUMNS)))  # one row: for execute_many


@dataclass(slots=True)
class CommandAnswered:
    """The host sent an event with the `req_id` of its newest `sent` command of that id."""

    host_id: int
    req_id: str
    answer: str
    at: datetime

    def values(self) -> tuple[object, ...]:
        return (self.req_id, self.host_id, self.answer, self.at)


ANSWER_COLUMNS = 4


def answer_commands(dialect: str, answers: list[CommandAnswered]) -> tuple[str, list[object]]:
    """One UPDATE for these answers (the first for a command counts: later ones in the list
    are left out, earlier batches' are no longer `sent`)."""
    first: dict[tuple[int, str], CommandAnswered] = {}
    for answer in answers:
        first.setdefault((answer.host_id, answer.req_id), answer)
    params = [value for answer in first.values() for value in answer.values()]
    if dialect == "sqlite":
        rows = ", ".join(["(?, ?, ?, ?)"] * len(first))
    else:
        numbers = range(1, len(params) + 1)
        rows = ", ".join(
            _POSTGRES_ANSWER.format(*numbers[start : start + ANSWER_COLUMNS])
            for start in range(0, len(params), ANSWER_COLUMNS)
        )
    return _ANSWERS.format(rows), params


CommandChange = NewCommand | CommandAnswered
# What the writer queues for them: one change, or many at once (`Commands` gathers them, so
# that a command costs the writer's queue no item of its own)
CommandChanges = CommandChange | list[CommandChange]


def _marks(dialect: str, count: int) -> list[str]:
    return ["?"] * count if dialect == "sqlite" else [f"${n}" for n in range(1, count + 1)]
