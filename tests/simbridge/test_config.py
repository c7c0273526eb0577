"""Configuration (contract §5): names, `.env`, validation, the generated JWT secret, the CLI."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from simbridge.config import ConfigError, Settings, load_settings, validate
from tests.processes import run_cli

LONG_SECRET = "a-jwt-secret-that-is-comfortably-longer-than-32-chars"


def test_load_settings_reads_contract_names(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "JWT_SECRET": LONG_SECRET,
            "DB_PATH": str(tmp_path / "relay.db"),
            "HOST": "127.0.0.2",
            "PORT": "9123",
        },
        env_file="",
    )

    assert settings.jwt_secret == LONG_SECRET
    assert settings.db_path == str(tmp_path / "relay.db")
    assert settings.db_url == f"sqlite://{tmp_path / 'relay.db'}"
    assert settings.is_sqlite
    assert (settings.host, settings.port) == ("127.0.0.2", 9123)


def test_load_settings_prefers_database_url_over_db_path(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "JWT_SECRET": LONG_SECRET,
            "DB_PATH": str(tmp_path / "ignored.db"),
            "DATABASE_URL": "postgres://relay@127.0.0.1:5432/relay",
        },
        env_file="",
    )

    assert settings.db_url == "postgres://relay@127.0.0.1:5432/relay"
    assert not settings.is_sqlite


def test_load_settings_reads_prefixed_names() -> None:
    settings = load_settings(
        {
            "JWT_SECRET": LONG_SECRET,
            "SIMBRIDGE_TOKEN_TTL_SECONDS": "120",
            "SIMBRIDGE_LOG_FLUSH_SECONDS": "0.25",
            "SIMBRIDGE_ACCESS_LOG": "yes",
            "SIMBRIDGE_BCRYPT_ROUNDS": "5",
            "SIMBRIDGE_WORKERS": "1",
        },
        env_file="",
    )

    assert settings.token_ttl_seconds == 120
    assert settings.log_flush_seconds == 0.25
    assert settings.access_log is True
    assert settings.bcrypt_rounds == 5
    assert settings.workers == 1


def test_load_settings_ignores_unprefixed_names_of_further_settings() -> None:
    settings = load_settings(
        {"JWT_SECRET": LONG_SECRET, "TOKEN_TTL_SECONDS": "5", "WORKERS": "3"}, env_file=""
    )

    assert settings.token_ttl_seconds == Settings().token_ttl_seconds
    assert settings.workers == 1


def test_load_settings_reads_env_file_under_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"JWT_SECRET={LONG_SECRET}\nPORT=9001\nHOST=127.0.0.3\nSIMBRIDGE_TOKEN_TTL_SECONDS=77\n"
    )

    settings = load_settings({"PORT": "9002"}, env_file=str(env_file))

    assert settings.jwt_secret == LONG_SECRET
    assert settings.host == "127.0.0.3"
    assert settings.token_ttl_seconds == 77
    assert settings.port == 9002  # the environment wins over the file


def test_load_settings_without_env_file_uses_defaults(tmp_path: Path) -> None:
    settings = load_settings({"JWT_SECRET": LONG_SECRET}, env_file=str(tmp_path / "missing.env"))

    assert (settings.host, settings.port) == ("127.0.0.1", 8100)
    assert settings.db_path == "simbridge.db"
    assert settings.database_url == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("SIMBRIDGE_TOKEN_TTL_SECONDS", "1.5h"),
        ("SIMBRIDGE_LOG_FLUSH_SECONDS", "fast"),
        ("SIMBRIDGE_ACCESS_LOG", "maybe"),
    ],
)
def test_load_settings_rejects_bad_value_naming_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JWT_SECRET": LONG_SECRET, variable: value}, env_file="")

    assert variable in str(raised.value)
    assert value in str(raised.value)


def test_load_settings_reports_every_bad_value_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {"JWT_SECRET": LONG_SECRET, "PORT": "x", "SIMBRIDGE_WORKERS": "y"}, env_file=""
        )

    assert "PORT" in str(raised.value)
    assert "SIMBRIDGE_WORKERS" in str(raised.value)


def test_validate_refuses_short_jwt_secret_with_howto() -> None:
    settings = load_settings({"JWT_SECRET": "x" * 31}, env_file="")

    with pytest.raises(ConfigError) as raised:
        validate(settings)

    message = str(raised.value)
    assert "JWT_SECRET" in message
    assert "32" in message
    assert "secrets.token_urlsafe" in message  # tells how to generate a good one


def test_validate_accepts_secret_of_exactly_32_characters() -> None:
    settings = load_settings({"JWT_SECRET": "x" * 32}, env_file="")

    assert validate(settings) is settings


def test_load_settings_without_secret_generates_private_file_beside_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "data" / "relay.db"
    environ = {"DB_PATH": str(db_path)}

    with caplog.at_level(logging.WARNING, logger="simbridge.config"):
        first = load_settings(environ, env_file="")
        second = load_settings(environ, env_file="")

    secret_file = tmp_path / "data" / "relay.jwt-secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() == first.jwt_secret
    assert len(first.jwt_secret) >= 32
    validate(first)
    assert second.jwt_secret == first.jwt_secret  # reused, so tokens survive a restart
    warnings = [r for r in caplog.records if "JWT_SECRET" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert str(secret_file) in warnings[0].getMessage()


def test_load_settings_with_secret_writes_no_secret_file(tmp_path: Path) -> None:
    load_settings({"JWT_SECRET": LONG_SECRET, "DB_PATH": str(tmp_path / "relay.db")}, env_file="")

    assert list(tmp_path.iterdir()) == []


def test_validate_refuses_memory_broker_with_many_workers() -> None:
    settings = load_settings({"JWT_SECRET": LONG_SECRET, "SIMBRIDGE_WORKERS": "2"}, env_file="")

    assert settings.broker == "memory"
    with pytest.raises(ConfigError) as raised:
        validate(settings)

    message = str(raised.value)
    assert "SIMBRIDGE_WORKERS" in message
    assert "SIMBRIDGE_BROKER=redis" in message


def test_validate_accepts_many_workers_on_the_redis_broker() -> None:
    env = {"JWT_SECRET": LONG_SECRET, "SIMBRIDGE_WORKERS": "4", "SIMBRIDGE_BROKER": "redis"}
    settings = validate(load_settings(env, env_file=""))

    assert (settings.workers, settings.redis_url) == (4, "redis://127.0.0.1:6379/0")


def test_validate_refuses_a_heartbeat_as_long_as_the_node_ttl() -> None:
    env = {"JWT_SECRET": LONG_SECRET, "SIMBRIDGE_HEARTBEAT_SECONDS": "7"}
    with pytest.raises(ConfigError, match="SIMBRIDGE_HEARTBEAT_SECONDS must be shorter"):
        validate(load_settings(env, env_file=""))


def test_validate_refuses_a_redis_url_of_another_scheme() -> None:
    env = {"JWT_SECRET": LONG_SECRET, "SIMBRIDGE_BROKER": "redis", "REDIS_URL": "http://x"}
    with pytest.raises(ConfigError, match="REDIS_URL must start with"):
        validate(load_settings(env, env_file=""))


def test_serve_with_short_secret_exits_2_with_message(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "serve", "--port", "1", JWT_SECRET="too-short", DB_PATH=str(tmp_path / "x.db")
    )

    assert result.returncode == 2, result.stderr
    assert "JWT_SECRET" in result.stderr
    assert "at least 32" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_serve_with_bad_port_variable_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", JWT_SECRET=LONG_SECRET, PORT="http")

    assert result.returncode == 2, result.stderr
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_refuses_a_tls_certificate_without_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"JWT_SECRET": LONG_SECRET, "SIMBRIDGE_TLS_CERT": str(cert)}
    with pytest.raises(ConfigError, match="must be set together"):
        validate(load_settings(env, env_file=""))


def test_validate_names_an_unreadable_tls_file(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    missing = tmp_path / "missing-key.pem"
    env = {
        "JWT_SECRET": LONG_SECRET,
        "SIMBRIDGE_TLS_CERT": str(cert),
        "SIMBRIDGE_TLS_KEY": str(missing),
    }
    with pytest.raises(ConfigError) as refused:
        validate(load_settings(env, env_file=""))
    assert f"SIMBRIDGE_TLS_KEY: cannot read {missing}" in str(refused.value)
    assert "SIMBRIDGE_TLS_CERT" not in str(refused.value)


def test_webhook_settings_are_read_and_must_be_positive() -> None:
    env = {
        "JWT_SECRET": LONG_SECRET,
        "SIMBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        "SIMBRIDGE_WEBHOOK_FIRST_RETRY_SECONDS": "0.05",
    }
    settings = validate(load_settings(env, env_file=""))
    assert settings.webhook_allow_private is True
    assert settings.webhook_first_retry_seconds == 0.05
    env["SIMBRIDGE_WEBHOOK_CONCURRENCY"] = "0"
    with pytest.raises(ConfigError, match="SIMBRIDGE_WEBHOOK_CONCURRENCY must be greater than 0"):
        validate(load_settings(env, env_file=""))
