"""Settings: read once from the environment (and `.env`), validated once, then frozen.

The contract's own names (`JWT_SECRET`, `DB_PATH`, `DATABASE_URL`, `HOST`, `PORT`) are kept;
every further knob is named `SIMBRIDGE_*`. Tests build `Settings(...)` directly instead of
touching the environment.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from simbridge.clock import Clock, utc_now

log = logging.getLogger("simbridge.config")

MIN_SECRET_LENGTH = 32
SECRET_HOWTO = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
BROKERS = ("memory", "redis")
MIN_METRICS_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """The settings cannot start a server; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server can be told. Field names are the env names without prefix."""

    jwt_secret: str = ""
    db_path: str = "simbridge.db"
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8100
    secret_file: str = ""
    token_ttl_seconds: int = 30 * 24 * 3600
    bcrypt_rounds: int = 12
    pairing_code_ttl_seconds: int = 600
    max_body_bytes: int = 64 * 1024
    max_message_bytes: int = 64 * 1024
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_close_timeout: float = 10.0
    send_timeout_seconds: float = 5.0
    request_correlation_seconds: int = 600
    log_batch_size: int = 5000
    log_flush_seconds: float = 0.05
    log_queue_size: int = 20_000
    inbox_ttl_seconds: int = 7 * 24 * 3600
    inbox_max: int = 1000
    last_seen_flush_seconds: float = 1.0
    graceful_shutdown_seconds: float = 8.0
    backlog: int = 2048
    retention_days: int = 90
    retention_interval_seconds: float = 3600.0
    retention_batch_size: int = 5000
    login_failures_per_username: int = 5
    login_failures_per_address: int = 20
    login_window_seconds: float = 300.0
    registrations_per_address: int = 10
    registration_window_seconds: float = 3600.0
    pair_failures_per_user: int = 10
    pair_failures_per_address: int = 10
    pair_window_seconds: float = 600.0
    ws_messages_per_second: float = 50.0
    ws_message_burst: int = 200
    max_sockets_per_user: int = 50
    max_devices_per_user: int = 100
    max_live_codes_per_host: int = 3
    max_live_codes_per_user: int = 5
    max_json_depth: int = 32
    user_cache_seconds: float = 10.0
    trusted_proxy_header: str = ""
    trusted_proxies: str = "127.0.0.1,::1"
    allowed_origins: str = ""
    cors_origins: str = ""
    broker: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "sb:"
    node_ttl_seconds: float = 7.0
    heartbeat_seconds: float = 2.0
    # Kept frames (contract §6) across processes, in Redis: every frame then costs one Redis
    # call, within one process too. Off, `since` is refused under the Redis broker.
    redis_inboxes: bool = False
    workers: int = 1
    access_log: bool = False
    gc_freeze: bool = True
    log_level: str = "INFO"
    # `GET /metrics` then needs `Authorization: Bearer <it>`; never shown in a repr or a log
    metrics_token: str = field(default="", repr=False)
    # `simbridge serve` listens with TLS (https://, wss://) when both are set: PEM files, read
    # again on SIGHUP or when they change, so a renewed certificate needs no restart
    tls_cert: str = ""
    tls_key: str = ""
    tls_poll_seconds: float = 5.0  # how often the files are checked for a change
    # Webhooks (contract §9)
    webhook_allow_private: bool = False  # true: private, loopback, link-local targets allowed
    webhook_timeout_seconds: float = 10.0  # a try without a 2xx by then failed
    webhook_first_retry_seconds: float = 30.0  # the first retry, then exponential with jitter
    webhook_max_retry_interval_seconds: float = 3600.0
    webhook_retry_for_seconds: float = 24 * 3600.0  # then the delivery is given up
    webhook_queue_size: int = 1000  # pending deliveries per webhook; the oldest are dropped
    webhook_concurrency: int = 4  # tries in flight per webhook
    max_webhooks_per_user: int = 20
    clock: Clock = field(default=utc_now, compare=False, repr=False)

    @property
    def db_url(self) -> str:
        """The Tortoise URL: `DATABASE_URL` if given, else the SQLite file `DB_PATH`."""
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.db_path}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of `DATABASE_URL` or `DB_PATH` (meaningless for PostgreSQL)."""
        return Path(self.db_url.removeprefix("sqlite://").split("?", 1)[0])

    @property
    def origins(self) -> frozenset[str]:
        """Browser origins allowed to open a WebSocket (requests without `Origin` always are)."""
        return _split(self.allowed_origins)

    @property
    def proxies(self) -> frozenset[str]:
        """Peer addresses whose `trusted_proxy_header` names the real client."""
        return _split(self.trusted_proxies)

    def problems(self) -> list[str]:
        """Every reason these settings cannot run a server, as sentences a person can act on."""
        found = []
        if len(self.jwt_secret) < MIN_SECRET_LENGTH:
            found.append(
                f"JWT_SECRET is {len(self.jwt_secret)} characters long; it must be at least "
                f"{MIN_SECRET_LENGTH}. Unset it to have one generated, or {SECRET_HOWTO}"
            )
        if not 1 <= self.port <= 65535:
            found.append(f"PORT must be between 1 and 65535, not {self.port}")
        if self.broker not in BROKERS:
            found.append(
                f"SIMBRIDGE_BROKER must be one of {', '.join(BROKERS)}, not {self.broker!r}"
            )
        if workers_problem := too_many_workers(self.broker, self.workers):
            found.append(workers_problem)
        if not 4 <= self.bcrypt_rounds <= 16:
            found.append("SIMBRIDGE_BCRYPT_ROUNDS must be between 4 and 16 (12 recommended)")
        if self.user_cache_seconds < 0:
            found.append("SIMBRIDGE_USER_CACHE_SECONDS must be 0 (no cache) or more")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                found.append(f"SIMBRIDGE_{name.upper()} must be greater than 0")
        if metrics_problem := _metrics_token_problem(self.metrics_token):
            found.append(metrics_problem)
        found.extend(_tls_problems(self.tls_cert, self.tls_key))
        if self.heartbeat_seconds >= self.node_ttl_seconds:
            found.append(
                "SIMBRIDGE_HEARTBEAT_SECONDS must be shorter than SIMBRIDGE_NODE_TTL_SECONDS "
                "(a live process would otherwise look dead between two heartbeats)"
            )
        if self.broker == "redis" and not self.redis_url.startswith(_REDIS_SCHEMES):
            found.append("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.database_url and not self.database_url.startswith(_URL_SCHEMES):
            found.append("DATABASE_URL must start with sqlite://, postgres:// or postgresql://")
        return found


_POSITIVE = (
    "ws_close_timeout",
    "token_ttl_seconds",
    "pairing_code_ttl_seconds",
    "max_body_bytes",
    "max_message_bytes",
    "ws_ping_interval",
    "ws_ping_timeout",
    "send_timeout_seconds",
    "request_correlation_seconds",
    "log_batch_size",
    "log_flush_seconds",
    "log_queue_size",
    "inbox_ttl_seconds",
    "inbox_max",
    "last_seen_flush_seconds",
    "graceful_shutdown_seconds",
    "backlog",
    "workers",
    "node_ttl_seconds",
    "heartbeat_seconds",
    "retention_days",
    "retention_interval_seconds",
    "retention_batch_size",
    "login_failures_per_username",
    "login_failures_per_address",
    "login_window_seconds",
    "registrations_per_address",
    "registration_window_seconds",
    "pair_failures_per_user",
    "pair_failures_per_address",
    "pair_window_seconds",
    "ws_messages_per_second",
    "ws_message_burst",
    "max_sockets_per_user",
    "max_devices_per_user",
    "max_live_codes_per_host",
    "max_live_codes_per_user",
    "max_json_depth",
    "tls_poll_seconds",
    "webhook_timeout_seconds",
    "webhook_first_retry_seconds",
    "webhook_max_retry_interval_seconds",
    "webhook_retry_for_seconds",
    "webhook_queue_size",
    "webhook_concurrency",
    "max_webhooks_per_user",
)
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_URL_SCHEMES = ("sqlite://", "postgres://", "postgresql://", "psycopg://", "asyncpg://")
_UNPREFIXED = ("jwt_secret", "db_path", "database_url", "host", "port", "redis_url")


def _tls_problems(cert: str, key: str) -> list[str]:
    """Both files or neither, and each one readable (its content is checked when loaded)."""
    if not cert and not key:
        return []
    if not cert or not key:
        return ["SIMBRIDGE_TLS_CERT and SIMBRIDGE_TLS_KEY must be set together (PEM files)"]
    found = []
    for name, path in (("SIMBRIDGE_TLS_CERT", cert), ("SIMBRIDGE_TLS_KEY", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            found.append(f"{name}: cannot read {path}: {exc.strerror or exc}")
    return found


def too_many_workers(broker: str, workers: int) -> str | None:
    """Why `workers` processes cannot share `broker`, or None if they can."""
    if broker == "memory" and workers > 1:
        return (
            f"SIMBRIDGE_WORKERS={workers} with SIMBRIDGE_BROKER=memory would misroute: the "
            "in-process broker routes only within one process, so a host and its client on "
            "different workers would never see each other. Set SIMBRIDGE_BROKER=redis (and "
            "REDIS_URL) to run several workers, or run one."
        )
    return None


def _metrics_token_problem(token: str) -> str | None:
    """Why `token` cannot guard `/metrics` (the message never quotes it), or None."""
    if not token:
        return None
    if len(token) < MIN_METRICS_TOKEN_LENGTH:
        return (
            f"SIMBRIDGE_METRICS_TOKEN is {len(token)} characters long; it must be at least "
            f"{MIN_METRICS_TOKEN_LENGTH} (or unset, for no token). {SECRET_HOWTO}"
        )
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        return (
            "SIMBRIDGE_METRICS_TOKEN must be printable ASCII without spaces (it travels in an "
            f"Authorization header). {SECRET_HOWTO}"
        )
    return None


def _split(listing: str) -> frozenset[str]:
    return frozenset(item.strip() for item in listing.split(",") if item.strip())


def env_name(field_name: str) -> str:
    """The environment variable that sets a field: contract names bare, the rest prefixed."""
    if field_name in _UNPREFIXED:
        return field_name.upper()
    return f"SIMBRIDGE_{field_name.upper()}"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, not {raw!r}")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "str": str,
}


def load_settings(environ: Mapping[str, str] | None = None, env_file: str = ".env") -> Settings:
    """Read settings from `environ` (default: the process environment) over `env_file`.

    Raises `ConfigError` naming every bad value; a missing `JWT_SECRET` is filled from the
    secret file (see `ensure_jwt_secret`).
    """
    merged: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    errors: list[str] = []
    for name, spec in Settings.__dataclass_fields__.items():
        raw = merged.get(env_name(name))
        if name == "clock" or raw is None:
            continue
        try:
            values[name] = _PARSERS[str(spec.type)](raw)
        except ValueError as exc:
            errors.append(f"{env_name(name)}: {exc}")
    if errors:
        raise ConfigError("; ".join(errors))
    return ensure_jwt_secret(Settings(**values))


def secret_file_path(settings: Settings) -> Path:
    """Where a generated JWT secret lives: `SIMBRIDGE_SECRET_FILE`, else beside the database."""
    if settings.secret_file:
        return Path(settings.secret_file)
    if settings.database_url and not settings.is_sqlite:
        return Path("simbridge.jwt-secret")
    db = settings.sqlite_path
    return db.with_name(db.stem + ".jwt-secret")


def ensure_jwt_secret(settings: Settings) -> Settings:
    """Return settings with a JWT secret: the configured one, or one kept in the secret file.

    The file is created once with mode 0600 so tokens survive restarts; creating it logs a
    warning, because a secret that lives on the same disk as the database is a convenience,
    not a policy.
    """
    if settings.jwt_secret:
        return settings
    path = secret_file_path(settings)
    if path.is_file():
        return replace(settings, jwt_secret=path.read_text().strip())
    secret = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago
        return replace(settings, jwt_secret=path.read_text().strip())
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    log.warning(
        "JWT_SECRET is not set: generated one and kept it in %s (mode 0600). "
        "Set JWT_SECRET to manage it yourself.",
        path,
    )
    return replace(settings, jwt_secret=secret)


def validate(settings: Settings) -> Settings:
    """Raise `ConfigError` unless the settings can run a server."""
    found = settings.problems()
    if found:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(found))
    return settings
