"""The stored data: users, their devices, pairing codes, pairings and the log of relayed messages.

Online status is not stored: it is whatever the live broker says (see `simbridge.hub`), so a
crash or restart can never leave a device marked online without a socket.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

MAX_ID = 2**31 - 1  # ids are 32-bit: anything larger names nothing
USERNAME_MAX_LENGTH = 32


def is_stored_id(value: int) -> bool:
    """Whether `value` can be an id at all (a larger one would overflow the query)."""
    return 1 <= value <= MAX_ID


class DeviceType(StrEnum):
    HOST = "host"
    CLIENT = "client"


class User(Model):
    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=USERNAME_MAX_LENGTH, unique=True)
    password_hash = fields.CharField(max_length=128)
    token_version = fields.IntField(default=0)  # bumped to revoke every older token at once
    created_at = fields.DatetimeField(auto_now_add=True)

    devices: fields.ReverseRelation[Device]

    class Meta:
        table = "users"


class Device(Model):
    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="devices", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    device_type = fields.CharEnumField(DeviceType, max_length=6)
    device_token = fields.CharField(max_length=128, null=True)  # SHA-256 of the device token
    last_seen = fields.DatetimeField(null=True)
    # The seqs of the frames kept for this device (contract §6) are reserved up to this one in
    # blocks, so that a restart, even after a crash, never gives a seq out twice.
    inbox_seq = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    user_id: int

    class Meta:
        table = "devices"
        indexes = (("user_id", "id"),)


class PairingCode(Model):
    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="pairing_codes", on_delete=fields.CASCADE
    )
    host_device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="pairing_codes", on_delete=fields.CASCADE
    )
    code = fields.CharField(max_length=64)  # HMAC-SHA256 of the code, never the code itself
    expires_at = fields.DatetimeField()
    used = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    user_id: int
    host_device_id: int

    class Meta:
        table = "pairing_codes"
        indexes = (("user_id", "code"), ("code", "expires_at"))


class Pairing(Model):
    id = fields.IntField(primary_key=True)
    host_device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="client_pairings", on_delete=fields.CASCADE
    )
    client_device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="host_pairings", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    host_device_id: int
    client_device_id: int

    class Meta:
        table = "pairings"
        unique_together = (("host_device_id", "client_device_id"),)
        indexes = (("client_device_id", "id"),)


class MessageLog(Model):
    """One relayed message. `payload` holds the JSON text exactly as it was forwarded."""

    id = fields.BigIntField(primary_key=True)
    from_device: fields.ForeignKeyNullableRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name=False, null=True, on_delete=fields.SET_NULL, db_index=False
    )
    to_device: fields.ForeignKeyNullableRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name=False, null=True, on_delete=fields.SET_NULL, db_index=False
    )
    msg_type = fields.CharField(max_length=16)
    payload = fields.TextField()
    created_at = fields.DatetimeField()
    # The frame's place in its recipient's inbox (contract §6): None for frames that got none
    # (relayed through another process, or logged before inboxes existed).
    seq = fields.BigIntField(null=True)

    from_device_id: int | None
    to_device_id: int | None

    class Meta:
        table = "message_logs"
        indexes = (("from_device_id", "id"), ("to_device_id", "id"))


class CommandState(StrEnum):
    """Where a command is in its life (contract §7)."""

    QUEUED = "queued"  # waiting for its host to connect
    SENT = "sent"  # written to the host's socket
    ANSWERED = "answered"  # the host sent an event with its req_id
    EXPIRED = "expired"  # its TTL passed while queued
    FAILED = "failed"  # refused (host offline, policy fail), or its host was deleted


class CommandRecord(Model):
    """One command from a client or the REST API, and what became of it.

    `host_device_id` is no foreign key: a host's commands outlive it (a queued one is then
    `failed`), and stay visible to the account, as long as history is kept. A command in the
    queue keeps the frame to write (`frame`) and its deadline (`expires_at`); the partial index
    `commands_queued` (in the migration) finds a host's queue without touching the rest.
    """

    id = fields.BigIntField(primary_key=True)
    req_id = fields.CharField(max_length=128, db_index=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, on_delete=fields.CASCADE, db_index=False
    )
    host_device_id = fields.IntField()
    sender_device_id = fields.IntField(null=True)  # None: sent through the REST API
    cmd = fields.TextField()
    state = fields.CharEnumField(CommandState, max_length=8)
    frame = fields.TextField(null=True)
    answer = fields.TextField(null=True)
    expires_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    user_id: int

    class Meta:
        table = "commands"


class Webhook(Model):
    """An account's receiver of its hosts' event frames (contract §9). `events` is a JSON list
    of event names, `["*"]` for all; `secret` signs the bodies, so it is kept as given."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="webhooks", on_delete=fields.CASCADE
    )
    url = fields.CharField(max_length=2048)
    events = fields.TextField()
    secret = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    user_id: int

    class Meta:
        table = "webhooks"


class WebhookDelivery(Model):
    """A delivery whose first try failed: retried at `next_attempt_at`, resumed after a
    restart, deleted once delivered or given up. `body` is the exact JSON that is signed."""

    id = fields.BigIntField(primary_key=True)
    delivery_id = fields.CharField(max_length=32, unique=True)
    webhook: fields.ForeignKeyRelation[Webhook] = fields.ForeignKeyField(
        "models.Webhook", related_name="deliveries", on_delete=fields.CASCADE
    )
    body = fields.TextField()
    attempts = fields.IntField(default=0)
    created_at = fields.DatetimeField()
    next_attempt_at = fields.DatetimeField(db_index=True)

    webhook_id: int

    class Meta:
        table = "webhook_deliveries"
