"""`eventjobs healthcheck SERVICE`: exit 0 when that service, in this container, is alive.

- api: GET /readyz on its own port (Postgres and RabbitMQ reachable).
- scheduler and workers have no HTTP port: each process heartbeats into the `servers` table every
  HEARTBEAT_SECONDS. Healthy means a row of that service, written from this container (its host name, a
  pid alive in this container's pid namespace), is younger than the dead-after window the reaper uses.
  A process whose event loop is stuck, or that cannot reach Postgres, stops heartbeating and fails this.

Used by the compose healthchecks and the Kubernetes exec probes. Runs inside the image only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.request

import asyncpg

from shared.lifecycle import dead_after
from shared.service_catalog import HEARTBEATS
from shared.settings import load_settings

TIMEOUT_SECONDS = 5.0


def check_api(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=TIMEOUT_SECONDS) as response:
            return None if response.status == 200 else f"/readyz answered {response.status}"
    except OSError as error:  # HTTPError (503 not ready) is an OSError too
        return f"/readyz: {error}"


def local_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


async def check_heartbeat(database_url: str, service: str, window: float) -> str | None:
    connection = await asyncpg.connect(database_url, timeout=TIMEOUT_SECONDS)
    try:
        fresh = await connection.fetchval(
            """SELECT count(*) FROM servers
                WHERE service = $1 AND host = $2 AND pid = ANY($3::int[])
                  AND last_heartbeat > now() - make_interval(secs => $4)""",
            service, socket.gethostname(), local_pids(), window, timeout=TIMEOUT_SECONDS,
        )
    finally:
        await connection.close()
    return None if fresh else f"no heartbeat of {service} from {socket.gethostname()} in the last {window:g}s"


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in {"api", *HEARTBEATS}:
        sys.exit(f"usage: healthcheck {{api|{'|'.join(HEARTBEATS)}}}")
    service = sys.argv[1]
    settings = load_settings()
    try:
        if service == "api":
            problem = check_api(settings.api_port)
        else:
            problem = asyncio.run(check_heartbeat(settings.database_url, HEARTBEATS[service],
                                                  dead_after(settings)))
    except (OSError, asyncpg.PostgresError) as error:  # TimeoutError is an OSError
        problem = f"{type(error).__name__}: {error}"
    if problem:
        sys.exit(f"unhealthy: {problem}")


if __name__ == "__main__":
    main()
