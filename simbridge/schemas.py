"""REST bodies and replies (contract §3), as pydantic models: they validate what arrives and
document what leaves in the OpenAPI description."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from simbridge.models import MAX_ID, USERNAME_MAX_LENGTH
from simbridge.services.commands import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS

DeviceId = Annotated[int, Field(ge=1, le=MAX_ID)]
Sim = Annotated[int, Field(ge=1, le=8)]
PhoneNumber = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9+*#]+$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- requests ---------------------------------------------------------------------------------
def _fits_bcrypt(value: str) -> str:
    size = len(value.encode())
    if not 6 <= size <= 72:
        raise ValueError(f"must be 6 to 72 bytes long (bcrypt's limit), not {size}")
    return value


Password = Annotated[
    str, AfterValidator(_fits_bcrypt), Field(description="6 to 72 bytes once UTF-8 encoded")
]


class Credentials(Body):
    username: Annotated[
        str, Field(min_length=3, max_length=USERNAME_MAX_LENGTH, pattern=r"^[A-Za-z0-9_.-]+$")
    ]
    password: Password


class PasswordChange(Body):
    current_password: Annotated[str, Field(max_length=1024)]
    new_password: Password


class LoginBody(Body):
    """Login takes any strings: a wrong shape is simply a wrong password."""

    username: Annotated[str, Field(max_length=256)]
    password: Annotated[str, Field(max_length=1024)]


class DeviceCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    type: Literal["host", "client"]


class PairConfirm(Body):
    code: Annotated[str, Field(max_length=64)]
    client_device_id: DeviceId


class OfflineOption(Body):
    """What to do when the host is offline (contract §7): refuse (503, v1) or queue."""

    offline: Literal["fail", "queue"] = "fail"
    ttl_seconds: Annotated[int, Field(ge=1, le=MAX_TTL_SECONDS)] = DEFAULT_TTL_SECONDS


WaitSeconds = Annotated[
    int, Field(ge=0, le=30, description="Seconds to wait for the host's answer (0: reply at once)")
]


class WaitQuery(Body):
    wait: WaitSeconds = 0


class SmsCommand(OfflineOption):
    to_device_id: DeviceId
    sim: Sim
    to: PhoneNumber
    body: Annotated[str, Field(min_length=1, max_length=1600)]


class CallCommand(OfflineOption):
    to_device_id: DeviceId
    sim: Sim
    to: PhoneNumber


class HostQuery(Body):
    host_device_id: DeviceId


class SimsQuery(OfflineOption):
    host_device_id: DeviceId
    wait: WaitSeconds = 0


class HistoryQuery(Body):
    device_id: DeviceId
    limit: Annotated[int, Field(ge=1, le=500)] = 50


# --- replies ----------------------------------------------------------------------------------
class UserOut(BaseModel):
    id: int
    username: str


class TokenOut(BaseModel):
    token: str
    user_id: int


class DeviceOut(BaseModel):
    id: int
    name: str
    type: Literal["host", "client"]
    is_online: bool
    last_seen: datetime | None


class DeviceCreated(BaseModel):
    id: int
    name: str
    type: Literal["host", "client"]
    is_online: bool
    device_token: str = Field(
        description="Opens this device's WebSocket instead of the user token; shown only once"
    )


class DeviceTokenOut(BaseModel):
    device_token: str


class PairingOut(BaseModel):
    id: int
    host_device_id: int
    client_device_id: int
    created_at: datetime


class Deleted(BaseModel):
    status: Literal["deleted"]


class PairCodeOut(BaseModel):
    code: str
    expires_in_seconds: int


class PairedOut(BaseModel):
    status: Literal["paired"]
    pairing_id: int
    host_device_id: int


class CommandSent(BaseModel):
    status: Literal["sent", "queued", "answered"] = Field(
        description="`sent` to the host, `queued` for it, or `answered` (with `wait`)"
    )
    req_id: str
    answer: dict[str, Any] | None = Field(
        default=None, description="The host's answer event; only when `answered`"
    )


class CommandStateOut(BaseModel):
    req_id: str
    host_device_id: int
    cmd: str
    state: Literal["queued", "sent", "answered", "expired", "failed"]
    created_at: datetime
    updated_at: datetime
    answer: dict[str, Any] | None = Field(description="The first event answering it")


class MessageOut(BaseModel):
    id: int
    from_device_id: int | None
    to_device_id: int | None
    msg_type: str
    payload: dict[str, Any]
    created_at: datetime


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[FieldError] | None = None


class HealthChecks(BaseModel):
    database: str = Field(description='"ok", or what failed ("timed out", "unreachable: ...")')
    broker: str = Field(description='"ok", or what failed')


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: HealthChecks


# --- webhooks (contract §9) -------------------------------------------------------------------
EventName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(\*|[A-Za-z0-9_.:-]+)$")]


class WebhookCreate(Body):
    """`events`: values of the event frames' `event` field; `["*"]` means every event."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://")]
    events: Annotated[list[EventName], Field(min_length=1, max_length=64)]


class WebhookCreated(BaseModel):
    id: int
    url: str
    events: list[str]
    secret: str  # shown only here


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    created_at: datetime
