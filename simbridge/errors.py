"""Domain errors, one class per condition a caller can cause; none of them imports Sanic.

SimBridgeError                      (status, message: the REST `detail`)
├── InvalidCredentials   401        wrong username or password, bad/expired token
├── Forbidden            403        the device is of the wrong type for the action
├── NotFound             404        missing or not visible to the caller
├── UsernameTaken        409
├── LimitReached         409        an account's device cap is full
├── TooManyRequests      429        a rate or attempt limit; carries `Retry-After`
├── InvalidPairingCode   400        invalid, used or expired (one message for all three)
├── BadRequest           400        body not JSON / not an object
├── ValidationFailed     422        carries `errors`: [{"field", "message"}]
├── HostOffline          503        the target host has no live WebSocket
└── RelayUnavailable     503        the other processes cannot be reached (Redis is away)
"""

from __future__ import annotations

from typing import Any, ClassVar


class SimBridgeError(Exception):
    status: ClassVar[int] = 500
    message: ClassVar[str] = "Internal server error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.detail = message or self.message
        self.extra = extra
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        """The JSON error body: `detail` first, then any extra fields."""
        return {"detail": self.detail, **self.extra}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidCredentials(SimBridgeError):
    status = 401
    message = "Could not validate credentials"


class Forbidden(SimBridgeError):
    status = 403
    message = "Not allowed"


class NotFound(SimBridgeError):
    status = 404
    message = "Not found"


class UsernameTaken(SimBridgeError):
    status = 409
    message = "Username already registered"


class LimitReached(SimBridgeError):
    status = 409
    message = "Limit reached"


class TooManyRequests(SimBridgeError):
    status = 429
    message = "Too many attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many attempts; try again in {retry_after} seconds")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InvalidPairingCode(SimBridgeError):
    status = 400
    message = "Invalid or expired pairing code"


class BadRequest(SimBridgeError):
    status = 400
    message = "Request body must be a JSON object"


class ValidationFailed(SimBridgeError):
    status = 422
    message = "Validation failed"


class HostOffline(SimBridgeError):
    status = 503
    message = "Host device is offline"


class RelayUnavailable(SimBridgeError):
    status = 503
    message = "The relay cannot reach its other processes now; try again shortly"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}
