"""The system's processes, declared once: `make run`, the tests, the image's entry point and health check,
and `make deploy-check` (which holds docker-compose.yml and deploy/ to this list) all read it."""

from __future__ import annotations

from dataclasses import dataclass

from shared.kinds import EMAIL_SERVICE, MAINTENANCE_SERVICE


@dataclass(frozen=True)
class ServiceProcess:
    name: str  # as in compose, Kubernetes, `eventjobs NAME` and `make run`'s output
    module: str  # run with `python -m`
    # The `servers.service` its heartbeat row carries (a worker's: the job service whose queue it consumes);
    # None: readiness is the api's /readyz.
    heartbeat: str | None
    concurrency: int = 0  # a worker's jobs at once unless WORKER_CONCURRENCY says otherwise


API = ServiceProcess("api", "services.api", None)
SCHEDULER = ServiceProcess("scheduler", "services.scheduler", "scheduler")
EMAIL_WORKER = ServiceProcess("email-worker", "services.email_worker", EMAIL_SERVICE, concurrency=10)
MAINTENANCE_WORKER = ServiceProcess("maintenance-worker", "services.maintenance_worker", MAINTENANCE_SERVICE,
                                    concurrency=2)
SERVICES = (API, SCHEDULER, EMAIL_WORKER, MAINTENANCE_WORKER)
MIGRATE_MODULE = "shared.db.migrate"  # the one-shot before any service starts (compose's migrate, the k8s Job)
# The processes judged ready by a heartbeat row, and the `servers.service` it carries (`make run`, the image's
# health check); the api is judged by /readyz instead.
HEARTBEATS = {service.name: service.heartbeat for service in SERVICES if service.heartbeat}
