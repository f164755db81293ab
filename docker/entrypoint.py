#!/opt/venv/bin/python
"""The image's entry point: `eventjobs SERVICE` runs one service of the image in place of this process.

    eventjobs api | scheduler | email-worker | maintenance-worker | migrate
    eventjobs healthcheck SERVICE      exit 0 when SERVICE in this container is healthy (for probes)
    eventjobs status | enqueue | requeue | delete | parking-lot | run ...   the operator's command
                                       (services/cli.py, `eventjobs --help`)

exec, not a child process: the service is PID 1's program, so SIGTERM from the orchestrator reaches it
directly and its drain (SHUTDOWN_TIMEOUT_SECONDS) runs. `make deploy-check` checks that this list, the
compose file and the Kubernetes manifests name the services of `shared/service_catalog.py`.
"""

from __future__ import annotations

import os
import sys

from shared.service_catalog import MIGRATE_MODULE
from shared.service_catalog import SERVICES as CATALOG

# service name (as in compose, Kubernetes and the servers table's processes) → module run with -m
SERVICES: dict[str, str] = {**{service.name: service.module for service in CATALOG}, "migrate": MIGRATE_MODULE}
HEALTHCHECK = "/opt/eventjobs/healthcheck.py"

USAGE = (f"usage: eventjobs {{{'|'.join(SERVICES)}}} | eventjobs healthcheck SERVICE | eventjobs COMMAND ... "
         "(eventjobs --help)")
CLI = "services.cli"


def command_for(argv: list[str]) -> list[str]:
    """The command line that replaces this process, or SystemExit(2) with the usage."""
    if len(argv) == 1 and argv[0] in SERVICES:
        return [sys.executable, "-m", SERVICES[argv[0]]]
    if len(argv) == 2 and argv[0] == "healthcheck":
        return [sys.executable, HEALTHCHECK, argv[1]]
    if argv:  # the operator's command answers the rest, with its own usage for what it does not know
        return [sys.executable, "-m", CLI, *argv]
    print(f"no command\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    command = command_for(sys.argv[1:])
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
