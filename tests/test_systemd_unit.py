"""deploy/simbridge.service: checked by systemd's own `systemd-analyze` (verify, and the
exposure score of `security`) where it is installed, and always read here for the hardening
options and the settings it gives the server. It cannot be started here: no systemd runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simbridge.config import Settings, env_name, load_settings, secret_file_path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "simbridge.service"
ENV_FILE = DEPLOY / "simbridge.env"
INSTALLED = "/opt/simbridge/venv/bin/simbridge"  # ExecStart's program, as docs/deployment.md
MAX_EXPOSURE = 20  # `systemd-analyze security` scores in tenths: 2.0 and below is "OK"
HOWTO = "install systemd (Debian/Ubuntu: apt-get install systemd) to check the unit"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections of a unit file, each key with every value it is given, in order (systemd
    allows a key more than once, which configparser does not)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{line!r} comes before any section"
        key, separator, value = line.partition("=")
        assert separator, f"not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def systemd_analyze() -> str:
    """The `systemd-analyze` program; skipped where it is missing (failed with CI=true)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = f"systemd-analyze is not installed; {HOWTO}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this checkout's `simbridge` (verify checks that the
    program exists; /opt/simbridge is not installed here)."""
    program = Path(sys.executable).parent / "simbridge"
    assert program.is_file(), program
    copy = tmp_path / "simbridge.service"
    copy.write_text(text.replace(INSTALLED, str(program)))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What systemd-analyze said about our unit (other units' messages are the machine's)."""
    return [line for line in result.stderr.splitlines() if "simbridge.service" in line]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = analyze("verify", str(runnable_copy(tmp_path, UNIT.read_text())))

    assert result.returncode == 0, result.stderr
    assert complaints(result) == []


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHome=yess")
    result = analyze("verify", str(runnable_copy(tmp_path, broken)))

    assert any("ProtectHome" in line or "yess" in line for line in complaints(result)), result


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    unit = runnable_copy(tmp_path, UNIT.read_text())
    result = analyze("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(unit))

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_the_unit_has_the_hardening_options(service: dict[str, list[str]]) -> None:
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "simbridge",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }
    assert {key: one(service, key) for key in expected} == expected
    assert service["SystemCallFilter"][0] == "@system-service"


def test_sigterm_stops_it_within_the_timeout(service: dict[str, list[str]]) -> None:
    assert one(service, "KillSignal") == "SIGTERM"
    # sockets closed within the graceful shutdown, then the queued log rows committed
    assert float(one(service, "TimeoutStopSec")) >= Settings().graceful_shutdown_seconds + 5


def test_the_database_and_the_secret_live_in_the_state_directory(
    service: dict[str, list[str]],
) -> None:
    state = f"/var/lib/{one(service, 'StateDirectory')}"
    env = dict(value.split("=", 1) for value in service["Environment"])
    settings = load_settings({**env, "JWT_SECRET": "x" * 48}, env_file="")

    assert one(service, "ExecStart") == f"{INSTALLED} serve"
    assert one(service, "EnvironmentFile") == "-/etc/simbridge/simbridge.env"
    assert one(service, "WorkingDirectory") == state
    assert Path(env["DB_PATH"]).parent == Path(state)
    assert secret_file_path(settings).parent == Path(state)  # where an unset secret is made
    assert set(env) <= {env_name(name) for name in Settings.__dataclass_fields__}
    assert settings.problems() == []
    assert settings.is_sqlite


def test_the_example_environment_file_names_only_settings() -> None:
    known = {env_name(name) for name in Settings.__dataclass_fields__}
    named = [
        line.lstrip("#").split("=", 1)[0]
        for line in ENV_FILE.read_text().splitlines()
        if "=" in line and line.lstrip("#").split("=", 1)[0].isupper()
    ]
    assert named, "no setting in the example"
    assert set(named) <= known
