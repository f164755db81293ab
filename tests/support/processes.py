"""Services as child processes, for tests that kill -9, SIGSTOP or restart them."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.environment import TestEnvironment

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.support.worker"  # the test kinds' worker
SCHEDULER = "tests.support.scheduler_process"  # a scheduler that knows the test kinds


@asynccontextmanager
async def service_process(
    module: str, env: TestEnvironment, log: Path, **overrides: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module` with the test environment's settings; SIGCONT, SIGTERM (then SIGKILL) at the end."""
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=ROOT, stderr=stderr, stdout=stderr, env=env.process_env(**overrides),
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)  # a test that failed while the process was stopped
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
