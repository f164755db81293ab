"""The four services as separate processes (`python -m services.…`), the way an operator runs them.

    async with running_services(env, smtp_port=sink.port, retry_delays="1,1") as services:
        await http.post(f"{services.base_url}/api/users", json=...)
        await services.kill("email_worker")      # SIGKILL, no cleanup
        await services.start("email_worker")     # a fresh process, waited on until ready

Each process logs to its own file; the tails are printed when the block fails, so a test failure
shows what the services said.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg

from shared.service_catalog import SERVICES as CATALOG
from tests.support.environment import TestEnvironment
from tests.support.smtp import free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]

# name (as a Python identifier: email_worker) → (module, the `servers.service` its heartbeat row carries;
# None: readiness is /readyz)
SERVICES: dict[str, tuple[str, str | None]] = {
    service.name.replace("-", "_"): (service.module, service.heartbeat) for service in CATALOG
}
READY_TIMEOUT = 60.0  # generous: four interpreters start at once on a shared 2-core machine


@dataclass
class ServiceProcess:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@dataclass
class RunningServices:
    env: TestEnvironment
    process_env: dict[str, str]
    base_url: str
    log_dir: Path
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    async def start(self, name: str, *, wait: bool = True) -> ServiceProcess:
        """Start `name` (again); by default wait until it answers /readyz or heartbeats."""
        module, _ = SERVICES[name]
        current = self.processes.get(name)
        if current is not None and current.running:
            raise RuntimeError(f"{name} is already running (pid {current.pid})")
        count = self.restarts.get(name, -1) + 1
        self.restarts[name] = count
        log_path = self.log_dir / (f"{name}.log" if count == 0 else f"{name}.{count}.log")
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=ROOT, env=self.process_env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )
        started = ServiceProcess(name, process, log_path, log_file)
        self.processes[name] = started
        if wait:
            await self.wait_ready([name])
        return started

    async def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, in-flight work is left as a crash leaves it."""
        await self._end(self.processes[name], signal.SIGKILL, timeout=10)

    async def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after `timeout`. Returns the exit code."""
        return await self._end(self.processes[name], signal.SIGTERM, timeout=timeout)

    async def restart(self, name: str) -> ServiceProcess:
        await self.kill(name)
        return await self.start(name)

    async def _end(self, service: ServiceProcess, signum: int, timeout: float) -> int | None:
        if service.running:
            with contextlib.suppress(ProcessLookupError):
                service.process.send_signal(signum)
            try:
                await asyncio.wait_for(service.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    service.process.kill()
                await service.process.wait()
        service.log_file.close()
        return service.process.returncode

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def log(self, name: str) -> str:
        return self.processes[name].log_path.read_text(errors="replace")

    async def wait_ready(self, names: Iterable[str], timeout: float = READY_TIMEOUT) -> None:
        for name in names:
            await eventually(lambda name=name: self._is_ready(name), timeout=timeout, interval=0.2,  # type: ignore[misc]
                             what=f"{name} to be ready (log: {self.processes[name].log_path})")

    async def _is_ready(self, name: str) -> bool:
        service = self.processes[name]
        if not service.running:
            raise AssertionError(f"{name} exited with {service.process.returncode}:\n{tail(service.log_path)}")
        _, heartbeat_service = SERVICES[name]
        if heartbeat_service is None:
            try:
                async with aiohttp.ClientSession() as http, http.get(
                    f"{self.base_url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        connection = await asyncpg.connect(self.env.database_url)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM servers WHERE service = $1 AND pid = $2", heartbeat_service, service.pid
            )
        except asyncpg.UndefinedTableError:  # not migrated yet
            return False
        finally:
            await connection.close()
        return bool(found)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@asynccontextmanager
async def running_services(
    env: TestEnvironment, smtp_port: int, *, names: Iterable[str] = tuple(SERVICES), **setting_overrides: Any
) -> AsyncIterator[RunningServices]:
    """Start the services against `env` and an SMTP server on `smtp_port`; stop them all afterwards.

    `setting_overrides` are Settings fields (retry_delays="1,1", worker_prefetch=10, ...), passed to
    each process as its environment variables.
    """
    api_port = free_port()
    process_env = env.process_env(smtp_host="127.0.0.1", smtp_port=smtp_port, api_host="127.0.0.1",
                                  api_port=api_port, **setting_overrides)
    process_env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix="eventjobs-e2e-") as log_dir:
        services = RunningServices(env, process_env, f"http://127.0.0.1:{api_port}", Path(log_dir))
        failed = False
        try:
            names = list(names)
            for name in names:
                await services.start(name, wait=False)
            await services.wait_ready(names)
            yield services
        except BaseException:
            failed = True
            raise
        finally:
            await asyncio.gather(*(services._end(service, signal.SIGTERM, timeout=20)
                                   for service in services.processes.values()))
            if failed:
                for service in services.processes.values():
                    print(f"----- {service.log_path.name} (last lines) -----\n{tail(service.log_path)}",
                          file=sys.stderr)
