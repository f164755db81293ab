"""API_PROCESSES: several api processes serving one port, under one supervisor.

With API_PROCESSES=1 `python -m services.api` is the api itself. With N > 1 it is a supervisor: it starts N
children (`python -m services.api` again, marked by CHILD_ENV), each binding API_HOST:API_PORT with
SO_REUSEPORT, so the kernel spreads incoming connections over them. Each child is a whole api: its own pool,
RabbitMQ connection, heartbeat row and /readyz.

What the children must agree on is given to them by the supervisor:
- SESSION_SECRET: when unset, one random secret for all of them, so a dashboard session or CSRF token made by
  one child is accepted by the next;
- /metrics: prometheus_client's multiprocess mode (a fresh directory per supervisor, removed at exit), so any
  child answers a scrape with the counters and histograms of all of them added up.
Rate limits stay per process (the README says so): a client's connections may land on different children.

SIGTERM or SIGINT to the supervisor is passed to every child, which drains as a single api does; the
supervisor exits once all have, with 0 or the first non-zero exit code among them. A child that exits on its own
(a crash, a bind that failed) stops the others too, and its code becomes the supervisor's: the orchestrator
restarts the whole api, as it would a single process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.logs import configure_logging
from shared.settings import Settings

log = logging.getLogger(__name__)

CHILD_ENV = "EVENTJOBS_API_CHILD"  # set in a supervised child: its index; it serves, never supervises
SUPERVISOR_ENV = "EVENTJOBS_API_SUPERVISOR"  # the supervisor's pid, in each child
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable, read when it is imported
KILL_GRACE_SECONDS = 10.0  # past SHUTDOWN_TIMEOUT_SECONDS, a child that has not exited is killed


def is_child() -> bool:
    return CHILD_ENV in os.environ


def supervises(settings: Settings) -> bool:
    return settings.api_processes > 1 and not is_child()


def follow_supervisor() -> None:
    """In a child: SIGTERM (a normal drain) when the supervisor dies, even by SIGKILL, so no child outlives it
    holding the port. Linux only (prctl); elsewhere a child outlives a killed supervisor."""
    if not is_child() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ.get(SUPERVISOR_ENV, "0")):  # it died before prctl: nobody will signal
        os.kill(os.getpid(), signal.SIGTERM)


def scrape_registry(own: CollectorRegistry, *shared_collectors: Collector) -> CollectorRegistry:
    """What /metrics exposes: this process's registry alone, or, under a supervisor, every child's counters
    and histograms summed (multiprocess mode) plus `shared_collectors` (figures read at scrape time)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not is_child() or not directory:
        return own
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
    for collector in shared_collectors:
        combined.register(collector)
    return combined


def child_environment(settings: Settings, index: int, metrics_dir: str, secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env[CHILD_ENV] = str(index)
    env[SUPERVISOR_ENV] = str(os.getpid())
    env[MULTIPROC_ENV] = metrics_dir
    if settings.session_secret is None:
        env["SESSION_SECRET"] = secret
    return env


def supervise(settings: Settings) -> int:
    """Run API_PROCESSES children until SIGTERM/SIGINT or until one of them exits; the exit code to use."""
    configure_logging("api", settings.log_level)
    metrics_dir = tempfile.mkdtemp(prefix="eventjobs-api-metrics-")
    secret = secrets.token_urlsafe(32)
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    try:
        for index in range(settings.api_processes):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "services.api"],
                env=child_environment(settings, index, metrics_dir, secret), stdin=subprocess.DEVNULL))
        log.info("api processes started", extra={"pids": [child.pid for child in children],
                                                 "url": f"http://{settings.api_host}:{settings.api_port}/"})
        code = 0
        deadline: float | None = None
        while any(child.poll() is None for child in children):
            ended = [child for child in children if child.returncode is not None]
            for child in ended:
                if child.returncode != 0 and code == 0:
                    code = child.returncode if child.returncode > 0 else 1  # killed by a signal: 1
            if ended and not stopping:
                log.error("an api process exited; stopping the others",
                          extra={"pid": ended[0].pid, "exit_code": ended[0].returncode})
                code = code or 1  # a child ending on its own is never a clean exit of the api
                stop_all()
            if stopping and deadline is None:
                deadline = time.monotonic() + settings.shutdown_timeout_seconds + KILL_GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                for child in children:
                    if child.poll() is None:
                        log.error("api process did not stop in time; killed", extra={"pid": child.pid})
                        child.kill()
                code = code or 1
            time.sleep(0.1)
        for child in children:
            if child.returncode != 0 and code == 0:
                code = child.returncode if child.returncode > 0 else 1
        log.info("api processes stopped", extra={"exit_code": code})
        return code
    finally:
        for child in children:  # an error in the supervisor itself must not leave children behind
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)
