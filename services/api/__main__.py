"""python -m services.api: the HTTP API and the /jobs dashboard on API_HOST:API_PORT."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.api import processes
from services.api.app import create_app
from services.api.http.app_keys import RUNTIME
from shared.lifecycle import heartbeat, new_server_id, run_service
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    # Under a supervisor (API_PROCESSES > 1) every child binds the same port; the kernel spreads connections.
    site = web.TCPSite(runner, settings.api_host, settings.api_port, reuse_port=processes.is_child())
    await site.start()
    log.info("api listening", extra={"url": f"http://{settings.api_host}:{settings.api_port}/"})
    try:
        # Like every process, the api shows on the Servers page; it holds no jobs, so no queues.
        async with heartbeat(runner.app[RUNTIME].pool, new_server_id("api"), service="api", queues=[],
                             concurrency=0, interval=settings.heartbeat_seconds):
            await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    settings = load_settings()
    if processes.supervises(settings):
        raise SystemExit(processes.supervise(settings))
    processes.follow_supervisor()
    run_service("api", main)
