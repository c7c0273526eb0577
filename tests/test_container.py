"""The Docker image, built from the Dockerfile and run for real with podman: the smoke flow over
HTTP and WebSockets, a graceful stop with SIGTERM, and its data kept on the volume.

Images cannot be pulled on the test machines, so the image is built on a Debian base made with
debootstrap and imported once as BASE_IMAGE (kept, so that later runs only build the image).
podman runs with runc and tests/container/containers.conf (crun, and the default ulimits,
cannot set resource limits there). Everything else a run creates (containers, the volume, the
image) carries the run's name and is removed afterwards, failed or not.

Skipped where podman, runc or debootstrap is missing; a failure with CI=true (.ci/run installs
them)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    Account,
    Pair,
    assert_closed_with,
    assert_relays,
    list_devices,
    login,
    make_account,
    make_pair,
    socket,
)
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = Path(__file__).resolve().parent / "container" / "containers.conf"
HOWTO = "install them with `apt-get install -y podman runc debootstrap` (as root)"
BASE_IMAGE = "localhost/debian-py:bookworm"  # python3 and python3-venv on Debian 12
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RUN = f"simbridge-test-{os.getpid()}-{secrets.token_hex(3)}"  # names what this run creates
IMAGE = f"localhost/{RUN}:latest"
LABEL = "--label=simbridge-test=true"  # what an interrupted run leaves can be found by it
UID = 10001  # the image's user (Dockerfile)
STOP_SECONDS = 10  # `podman stop -t 10`, as `docker stop`
START_SECONDS = 30.0
BUILD_SECONDS = 600


def require(program: str) -> str:
    """`program`'s path; skipped where it is missing (failed with CI=true)."""
    found = shutil.which(program)
    if found is None or os.geteuid() != 0:
        reason = (
            f"{program} is not installed; {HOWTO}"
            if found is None
            else "podman and debootstrap need root here (rootless podman is not set up)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podman --runtime runc ARGS` with the tests' containers.conf, `timeout` seconds at most."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        [require("podman"), "--runtime", "runc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def exists(kind: str, name: str) -> bool:
    return podman(kind, "exists", name, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian archive apt uses here (its sources name a mirror that answers), for `SUITE`."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")):  # deb822 stanzas
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            uris = fields.get("URIs", "").split()
            if uris and SUITE in fields.get("Suites", "").split():
                return uris[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


def import_base(workdir: Path) -> None:
    """BASE_IMAGE from Debian's packages (about 40 s): debootstrap, then `podman import`."""
    rootfs = workdir / "rootfs"
    try:
        subprocess.run(
            [require("debootstrap"), "--variant=minbase", "--include=python3,python3-venv"]
            + [SUITE, str(rootfs), debian_mirror()],
            capture_output=True,
            text=True,
            timeout=BUILD_SECONDS,
            check=True,
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = workdir / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(rootfs), "-cf", str(tarball), "."],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        podman("import", str(tarball), BASE_IMAGE, timeout=120)
    except subprocess.CalledProcessError as failed:
        pytest.fail(f"{failed.cmd[0]}: exit {failed.returncode}\n{failed.stderr}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        (workdir / "rootfs.tar").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image, built on BASE_IMAGE (imported first if missing); removed afterwards."""
    require("podman")
    require("runc")
    if not exists("image", BASE_IMAGE):
        import_base(tmp_path_factory.mktemp("base"))
    try:
        podman(
            "build",
            "--pull=never",
            "--layers=false",  # no cached layers left behind (they would pile up, run after run)
            "--network=host",
            "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",  # pip's CA bundle on the Debian base
            f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
            f"--tag={IMAGE}",
            LABEL,
            str(ROOT),
            timeout=BUILD_SECONDS,
        )
        yield IMAGE
    finally:
        podman("rmi", "--force", IMAGE, check=False)


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self, template: str) -> str:
        return podman("inspect", f"--format={{{{.State.{template}}}}}", self.name).stdout.strip()


@dataclass
class Containers:
    """Starts containers of `image` on `volume`; the fixture removes them (and it) afterwards."""

    image: str
    volume: str
    started: list[Container] = field(default_factory=list)

    async def start(self) -> Container:
        container = Container(f"{RUN}-{len(self.started) + 1}", free_port())
        self.started.append(container)
        podman(
            "run",
            "--detach",
            LABEL,
            f"--name={container.name}",
            "--network=host",  # no CNI networking in these machines; HOST keeps it on loopback
            "--env=HOST=127.0.0.1",
            f"--env=PORT={container.port}",
            f"--volume={self.volume}:/data",
            self.image,
        )
        await self._wait_until_serving(container)
        return container

    async def _wait_until_serving(self, container: Container) -> None:
        deadline = time.monotonic() + START_SECONDS
        async with httpx.AsyncClient(base_url=container.url, timeout=1) as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if container.state("Running") != "true":
                    pytest.fail(f"{container.name} exited:\n{container.logs()}")
                await asyncio.sleep(0.2)
        pytest.fail(f"{container.name} not serving after {START_SECONDS}s:\n{container.logs()}")

    async def stop(self, container: Container) -> float:
        """`podman stop -t 10` (SIGTERM, then SIGKILL after 10 s); returns the seconds taken."""
        began = time.monotonic()
        await asyncio.to_thread(
            podman, "stop", f"--time={STOP_SECONDS}", container.name, timeout=STOP_SECONDS + 20
        )
        return time.monotonic() - began


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    volume = f"{RUN}-data"
    podman("volume", "create", LABEL, volume)
    made = Containers(image, volume)
    try:
        yield made
    finally:
        for container in made.started:
            podman("rm", "--force", "--time=0", container.name, check=False)
        podman("volume", "rm", "--force", volume, check=False)


def test_image_runs_as_a_user_with_its_data_on_a_volume(image: str) -> None:
    config = podman(
        "image",
        "inspect",
        "--format={{.Config.User}} {{json .Config.Volumes}} {{.Config.StopSignal}}",
        image,
    ).stdout.split()
    assert config == [f"{UID}:{UID}", '{"/data":{}}', "SIGTERM"], config
    env = podman("image", "inspect", "--format={{json .Config.Env}}", image).stdout
    for setting in (
        "DB_PATH=/data/simbridge.db",
        "SIMBRIDGE_SECRET_FILE=/data/simbridge.jwt-secret",
    ):
        assert f'"{setting}"' in env, env
    assert '"PATH=/venv/bin:' in env, env


async def test_image_serves_stops_on_sigterm_and_keeps_its_data(containers: Containers) -> None:
    first = await containers.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        alice: Account = await make_account(http, "alice")
        pair: Pair = await make_pair(http, alice)
        async with socket(first, pair.host) as host_ws, socket(first, pair.client) as client_ws:
            await assert_relays(host_ws, client_ws)
            stopping = asyncio.create_task(containers.stop(first))
            await assert_closed_with(host_ws, 1001)
            await assert_closed_with(client_ws, 1001)
            seconds = await stopping
    assert seconds < STOP_SECONDS, f"stopped in {seconds:.1f}s (killed?):\n{first.logs()}"
    assert first.state("ExitCode") == "0", first.logs()

    # The database and the generated JWT secret are on the volume, written by the image's user.
    mountpoint = podman("volume", "inspect", "--format={{.Mountpoint}}", containers.volume)
    data = Path(mountpoint.stdout.strip())
    for name in ("simbridge.db", "simbridge.jwt-secret"):
        assert (data / name).stat().st_uid == UID, sorted(p.name for p in data.iterdir())

    second = await containers.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        assert (await login(http, "alice")).status_code == 200
        devices = await list_devices(http, alice)  # the token of before: the same secret
        assert {row["id"] for row in devices} == {pair.host.id, pair.client.id}, devices
        async with socket(second, pair.host) as host_ws, socket(second, pair.client) as client_ws:
            await assert_relays(host_ws, client_ws, "after-restart")  # still paired
