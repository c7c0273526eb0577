"""Which sessions a `CloseSessions` control message selects: each process matches it against
its own sessions, so the rule must be exact."""

from __future__ import annotations

from simbridge.hub import Session
from simbridge.hub.control import CloseSessions
from simbridge.limits import TokenBucket
from simbridge.models import DeviceType
from tests.fakes import FakeConnection


def session(user_id: int = 1, device_id: int = 10, token_version: int | None = 2) -> Session:
    return Session(
        FakeConnection(), device_id, DeviceType.CLIENT, user_id, token_version, TokenBucket(1, 1)
    )


def test_a_user_wide_close_selects_every_socket_of_that_user_only() -> None:
    close = CloseSessions(1, 4001, "revoked")
    assert close.matches(session())
    assert close.matches(session(device_id=11, token_version=None))
    assert not close.matches(session(user_id=2))


def test_a_device_close_selects_that_device_only() -> None:
    close = CloseSessions(1, 4002, "device removed", device_id=10)
    assert close.matches(session(device_id=10))
    assert not close.matches(session(device_id=11))


def test_a_credential_close_tells_device_tokens_from_user_tokens() -> None:
    device_token_close = CloseSessions(1, 4001, "revoked", credential="device")
    assert device_token_close.matches(session(token_version=None))
    assert not device_token_close.matches(session(token_version=2))


def test_older_token_versions_are_selected_newer_ones_and_device_tokens_kept() -> None:
    close = CloseSessions(1, 4001, "revoked", credential="user", token_version_below=3)
    assert close.matches(session(token_version=2))
    assert not close.matches(session(token_version=3))
    assert not close.matches(session(token_version=None))
