"""Prometheus metrics of the job engine, per process: what workers ran and how, what the scheduler fired.

The scheduler and the workers serve them on `METRICS_PORT` (/metrics and /healthz, see serve_metrics);
the api adds them to its own /metrics. Labels are bounded: service, kind (a registered kind), outcome,
recurring id. Every family is named in EXPORTED, which the Grafana dashboard test checks its queries against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# One registry for the process (not the default one, so library metrics stay out).
REGISTRY = CollectorRegistry()

# Seconds: a job runs from milliseconds to its timeout (up to 30 min for maintenance).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Lateness: how long after its run_at a job started; a healthy system stays under a second.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

JOBS_PROCESSED = Counter("eventjobs_jobs_processed", "Job runs that ended, by outcome: succeeded, retried (will "
                         "run again), failed (for good), lost (the lease was lost, nothing recorded)",
                         ["service", "kind", "outcome"], registry=REGISTRY)
JOB_DURATION = Histogram("eventjobs_job_duration_seconds", "How long a job's handler ran", ["service", "kind"],
                         buckets=DURATION_BUCKETS, registry=REGISTRY)
JOB_LATENESS = Histogram("eventjobs_job_lateness_seconds", "How long after its run_at a job started",
                         ["service", "kind"], buckets=LATENESS_BUCKETS, registry=REGISTRY)
JOB_RETRIES = Counter("eventjobs_job_retries", "Failed attempts that will be retried", ["service", "kind"],
                      registry=REGISTRY)
MESSAGES_PARKED = Counter("eventjobs_messages_parked", "Messages copied to the parking lot (jobs.dead)",
                          ["service"], registry=REGISTRY)
SCHEDULER_FIRES = Counter("eventjobs_scheduler_fires", "Recurring occurrences this scheduler enqueued",
                          ["recurring_id"], registry=REGISTRY)
SCHEDULER_MISFIRES = Counter("eventjobs_scheduler_misfires", "Recurring occurrences missed (a stall or downtime) "
                             "and handled by the misfire policy", ["recurring_id", "policy"], registry=REGISTRY)
SCHEDULER_PROMOTED = Counter("eventjobs_scheduler_promoted", "Delayed jobs promoted to enqueued", registry=REGISTRY)


class InFlight(Collector):
    """Jobs running now in this process, read from the consumers at scrape time (never drifts)."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("eventjobs_jobs_in_flight", "Jobs running now", labels=["service"])
        for service, count in self.sources.items():
            family.add_metric([service], count())
        yield family


IN_FLIGHT = InFlight()
REGISTRY.register(IN_FLIGHT)

# Families exported by the services (with the api's own and its RabbitMQ queue gauges); the names Prometheus
# shows (counters get _total, histograms _bucket/_sum/_count).
EXPORTED = frozenset({
    "eventjobs_jobs_processed_total", "eventjobs_job_duration_seconds", "eventjobs_job_lateness_seconds",
    "eventjobs_job_retries_total", "eventjobs_messages_parked_total", "eventjobs_scheduler_fires_total",
    "eventjobs_scheduler_misfires_total", "eventjobs_scheduler_promoted_total", "eventjobs_jobs_in_flight",
    "eventjobs_queue_messages", "eventjobs_queue_messages_ready", "eventjobs_queue_consumers",
    "eventjobs_deliveries_dropped_total", "eventjobs_jobs", "http_requests_total", "http_request_duration_seconds",
    "jobs_enqueued_total",
})


def job_started(service: str, kind: str, attempt: int, run_at: datetime | None) -> float:
    """At a claim: the lateness of a first attempt (a retry's wait is the policy's, not lateness);
    the monotonic start for handler_ended."""
    if attempt == 1 and run_at is not None:
        JOB_LATENESS.labels(service, kind).observe(max((datetime.now(UTC) - run_at).total_seconds(), 0.0))
    return time.monotonic()


def handler_ended(service: str, kind: str, started: float) -> None:
    JOB_DURATION.labels(service, kind).observe(time.monotonic() - started)


def job_outcome(service: str, kind: str, outcome: str) -> None:
    """succeeded, retried (a failed attempt that will run again), failed (for good), lost (lease lost)."""
    JOBS_PROCESSED.labels(service, kind, outcome).inc()
    if outcome == "retried":
        JOB_RETRIES.labels(service, kind).inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)


@asynccontextmanager
async def serve_metrics(port: int | None, host: str = "127.0.0.1", healthy: Callable[[], bool] | None = None,
                        ) -> AsyncIterator[int | None]:
    """/metrics and /healthz on `port` (None: not served); yields the port bound (0 picks a free one)."""
    if port is None:
        yield None
        return

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy() if healthy is not None else True
        return web.json_response({"status": "ok" if ok else "unhealthy"}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        bound: Any = runner.addresses[0][1] if runner.addresses else port
        log.info("metrics served", extra={"port": bound})
        yield int(bound)
    finally:
        await runner.cleanup()
