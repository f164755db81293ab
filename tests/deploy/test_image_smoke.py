"""make image-smoke: the image built for real with podman and run as containers against this machine.

No image can be pulled here, so the base is made locally (debootstrap → podman import) and passed as
BASE_IMAGE. The build reaches the package index through the host's CA certificates and pip
configuration, mounted read-only. Migrate and the four services then run on the host network against the
machine's Postgres and RabbitMQ (a database and a vhost of their own) and an SMTP sink in this test, with
read-only root filesystems. Everything made (podman storage, base, image, containers, database, vhost) is
removed afterwards, whatever the outcome: podman works in a storage root of its own under a temporary
folder, so nothing else on the machine is touched.

Skipped unless EVENTJOBS_IMAGE_SMOKE=1 (set by `make image-smoke`): it needs root and takes minutes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from scripts.ensure_services import apt_install
from shared.service_catalog import SERVICES as CATALOG
from tests.support.environment import Management, amqp_url, database_url, drop_database
from tests.support.smtp import SmtpSink, free_port, running_sink
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.skipif(os.environ.get("EVENTJOBS_IMAGE_SMOKE") != "1",
                       reason="make image-smoke runs it (root, podman, debootstrap, minutes)"),
    pytest.mark.timeout(1800),
]

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = uuid.uuid4().hex[:8]
SERVICES = tuple(service.name for service in CATALOG)
# runc, not crun: crun refuses this machine's hybrid cgroup layout. The ulimits keep runc from trying to
# raise limits beyond what the sandbox allows.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""
# What pip on the host reads to reach the index (certificates, index URL, constraints), in the same places
# inside the build: mounted read-only into each RUN of the build only, never into the image.
HOST_PIP_FILES = ("/etc/ssl/certs", "/etc/pip.conf", "/etc/xdg/pip", "~/.config/pip", "~/.pip")


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line for the person running make image-smoke (image size, durations), outside pytest's capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[image-smoke] {line}", flush=True)


class Podman:
    """podman in a storage root of its own, so that removing everything it made touches nothing else."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(workdir / "containers.conf")}
        self.base = ["podman", "--root", str(workdir / "storage"), "--runroot", str(workdir / "run")]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 stdin: int | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False, stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def remove_everything(self) -> None:
        self("rm", "--all", "--force", "--time", "5", check=False, timeout=120)
        self("rmi", "--all", "--force", check=False, timeout=120)
        # Whatever podman still has mounted under its root (a crash midway) must go before the folder does.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.workdir))), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    missing = [tool for tool in ("podman", "runc", "catatonit", "debootstrap") if shutil.which(tool) is None]
    if missing:
        assert os.geteuid() == 0, f"image-smoke needs root to install {missing} (Debian: apt-get install)"
        assert apt_install("--no-install-recommends", "podman", "catatonit", "runc", "debootstrap"), \
            "apt-get install podman catatonit runc debootstrap failed"
    runner = Podman(Path(tempfile.mkdtemp(prefix=f"eventjobs-image-smoke-{RUN_ID}-")))
    try:
        yield runner
    finally:
        runner.remove_everything()


@pytest.fixture(scope="module")
def base_image(podman: Podman, request: pytest.FixtureRequest) -> str:
    """Debian bookworm with Python 3.11 and venv: the python:3.11-slim this machine cannot pull."""
    rootfs, tag = podman.workdir / "rootfs", f"localhost/eventjobs-base:smoke-{RUN_ID}"
    started = time.monotonic()
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python-is-python3",
                    "bookworm", str(rootfs)], check=True, capture_output=True, timeout=900)
    # What slim images leave out too: the downloaded packages, the package lists, documentation.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    podman("import", "-", tag, stdin=tar.stdout.fileno(), timeout=300)
    assert tar.wait(timeout=60) == 0
    shutil.rmtree(rootfs)
    report(request, f"local base image {tag} made in {time.monotonic() - started:.0f}s")
    return tag


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str, request: pytest.FixtureRequest) -> str:
    tag = f"localhost/eventjobs:smoke-{RUN_ID}"
    mounts = []
    for name in HOST_PIP_FILES:
        path = Path(name).expanduser()
        if path.exists():
            inside = str(path).replace(str(Path.home()), "/root", 1)  # the build runs as root
            mounts += ["--volume", f"{path}:{inside}:ro"]
    started = time.monotonic()
    podman("build", "--network", "host", *mounts, "--build-arg", f"BASE_IMAGE={base_image}",
           "--file", "docker/Dockerfile", "--tag", tag, str(ROOT), timeout=1200)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    report(request, f"image {tag} built in {time.monotonic() - started:.0f}s, {size / 1e6:.0f} MB")
    return tag


@dataclass(frozen=True)
class Deployment:
    image: str
    api_url: str
    sink: SmtpSink
    env: dict[str, str]

    @staticmethod
    def container(service: str) -> str:
        return f"eventjobs-smoke-{RUN_ID}-{service}"


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[SmtpSink]:
    async with running_sink() as running:  # a free port, not 1025: nothing else's mail lands here
        yield running


@pytest.fixture(scope="module")
async def deployment(podman: Podman, image: str, sink: SmtpSink,
                     request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    database, vhost = f"eventjobs_smoke_{RUN_ID}", f"eventjobs_smoke_{RUN_ID}"
    management = Management()
    await management.create_vhost(vhost)
    api_port = free_port()
    env = {
        "DATABASE_URL": database_url(database), "AMQP_URL": amqp_url(vhost),
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port),
        "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
        "HEARTBEAT_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "5",
    }
    options = ["--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    started = time.monotonic()
    failed = True  # until the tests ran: a failure to start shows the services' logs too
    try:
        migrate = podman("run", "--rm", "--name", Deployment.container("migrate"), *options, image, "migrate",
                         check=False, timeout=300)
        assert migrate.returncode == 0, f"migrate exited {migrate.returncode}:\n{migrate.stderr}"
        for service in SERVICES:
            # Its own host name per container: the heartbeat check finds this container's row by it.
            podman("run", "--detach", "--name", Deployment.container(service), "--hostname",
                   Deployment.container(service), *options, image, service)
        running = Deployment(image, f"http://127.0.0.1:{api_port}", sink, env)
        for service in SERVICES:
            await eventually(lambda service=service: healthy(podman, service), timeout=180, interval=1,
                             what=f"{service} container healthy")
        report(request, f"migrate + 4 services healthy in {time.monotonic() - started:.0f}s")
        yield running
        failed = bool(request.session.testsfailed)
    finally:
        if failed:
            for service in SERVICES:
                logs = podman("logs", "--tail", "30", Deployment.container(service), check=False)
                report(request, f"--- {service} logs ---\n{logs.stdout}{logs.stderr}")
        for service in SERVICES:
            podman("rm", "--force", "--time", "10", Deployment.container(service), check=False)
        await management.delete_vhost(vhost)
        await drop_database(database)


async def healthy(podman: Podman, service: str) -> bool:
    check = podman("exec", Deployment.container(service), "eventjobs", "healthcheck", service, check=False)
    return check.returncode == 0


async def test_a_signup_over_http_sends_the_welcome_email(deployment: Deployment) -> None:
    address = f"smoke-{RUN_ID}@example.com"
    async with aiohttp.ClientSession() as session, session.post(
        f"{deployment.api_url}/api/users", json={"email": address, "name": "Smoke Test"}
    ) as response:
        assert response.status == 201, await response.text()
    [welcome] = await deployment.sink.wait_for(1, recipient=address, timeout=120)
    assert "Smoke Test" in welcome.body("plain")


def test_every_container_runs_as_non_root_on_a_read_only_root(podman: Podman, deployment: Deployment) -> None:
    for service in SERVICES:
        name = deployment.container(service)
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001", service
        assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
        write = podman("exec", name, "python", "-c", "open('/opt/venv/probe', 'w')", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, (service, write.stderr)


def test_the_heartbeat_check_sees_only_its_own_service(podman: Podman, deployment: Deployment) -> None:
    """The check is not trivially true: the email worker's container holds no scheduler heartbeat."""
    wrong = podman("exec", deployment.container("email-worker"), "eventjobs", "healthcheck", "scheduler",
                   check=False)
    assert wrong.returncode == 1 and "no heartbeat of scheduler" in wrong.stderr, wrong.stderr


def test_an_unknown_service_is_refused(podman: Podman, image: str) -> None:
    result = podman("run", "--rm", "--network", "none", image, "web", check=False)
    assert result.returncode == 2 and "usage: eventjobs" in result.stderr, result.stderr


def test_sigterm_stops_every_service_cleanly(podman: Podman, deployment: Deployment) -> None:
    """The service is PID 1 (exec'd by the entry point), so the orchestrator's SIGTERM starts its drain."""
    for service in SERVICES:
        name = deployment.container(service)
        started = time.monotonic()
        podman("stop", "--time", "30", name, timeout=60)
        elapsed = time.monotonic() - started
        state = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert state == "0", f"{service} exited {state} on SIGTERM"
        assert elapsed < 25, f"{service} took {elapsed:.0f}s to stop: SIGTERM did not reach it"

