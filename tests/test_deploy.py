"""deploy/compose.yaml and deploy/nginx.conf cannot run here (no container engine with images):
their configuration is checked instead, against the settings the server really reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from simbridge.config import Settings, env_name, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SIMBRIDGE_SERVICES = ("simbridge-1", "simbridge-2")
PLACEHOLDER = re.compile(r"\$\{(\w+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


@pytest.fixture(scope="module")
def nginx() -> str:
    return (DEPLOY / "nginx.conf").read_text()


def environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][service]["environment"].items()}


def filled(value: str) -> str:
    """A `${NAME:?message}` placeholder as a deployer would fill it."""
    return PLACEHOLDER.sub(lambda match: f"{match.group(1).lower()}-" + "x" * 40, value)


def test_both_processes_share_one_configuration(compose: dict[str, Any]) -> None:
    first, second = (environment(compose, name) for name in SIMBRIDGE_SERVICES)
    assert first == second
    assert first["SIMBRIDGE_BROKER"] == "redis"


def test_every_variable_set_is_a_setting_and_the_whole_is_valid(compose: dict[str, Any]) -> None:
    env = {name: filled(value) for name, value in environment(compose, "simbridge-1").items()}
    known = {env_name(name) for name in Settings.__dataclass_fields__} | {"REDIS_URL"}
    assert set(env) <= known
    settings = load_settings(env, env_file="")
    assert settings.problems() == []


def test_processes_reach_the_redis_and_postgres_services(compose: dict[str, Any]) -> None:
    env = environment(compose, "simbridge-1")
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert re.match(r"postgres://simbridge:.*@postgres:5432/simbridge$", env["DATABASE_URL"])
    postgres = compose["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("simbridge", "simbridge")


def test_redis_keeps_its_data_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_only_the_proxy_is_trusted_with_the_header_it_sets(
    compose: dict[str, Any], nginx: str
) -> None:
    env = environment(compose, "simbridge-1")
    proxy_address = compose["services"]["proxy"]["networks"]["simbridge"]["ipv4_address"]
    assert env["SIMBRIDGE_TRUSTED_PROXIES"] == proxy_address
    header = env["SIMBRIDGE_TRUSTED_PROXY_HEADER"]
    assert re.search(rf"proxy_set_header {header} \$remote_addr;", nginx)


def test_nginx_spreads_over_both_processes(nginx: str) -> None:
    upstream = re.search(r"upstream simbridge \{(.*?)\}", nginx, re.S)
    assert upstream is not None
    servers = re.findall(r"server ([\w-]+):(\d+)", upstream.group(1))
    assert servers == [(name, "8100") for name in SIMBRIDGE_SERVICES]


def test_nginx_upgrades_websockets(nginx: str) -> None:
    assert "proxy_http_version 1.1;" in nginx
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx
    assert "proxy_set_header Connection $connection_upgrade;" in nginx
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;", nginx)
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", nginx)
    assert read_timeout is not None
    assert int(read_timeout.group(1)) > Settings().ws_ping_interval  # pings keep sockets open


def test_nginx_logs_no_query_string(nginx: str) -> None:
    log_format = re.search(r"log_format simbridge (.*?);", nginx, re.S)
    assert log_format is not None
    assert "$uri" in log_format.group(1)
    assert "$request " not in log_format.group(1) and "$request_uri" not in log_format.group(1)
