"""/metrics for Prometheus: requests and latency by route, jobs enqueued by kind, deliveries dropped by workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import Handler
from services.api.openapi.route_table import ApiRoutes
from services.api.processes import scrape_registry
from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.rabbitmq_management import Management, ManagementUnavailable, QueueInfo

routes = ApiRoutes("metrics")

UNMATCHED = "unmatched"  # 404s keep one label value: raw URLs would let any client grow the series


@dataclass(frozen=True)
class ApiMetrics:
    """One registry per application, so several apps in one process (tests) do not collide."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    jobs_enqueued: Counter
    dropped: DroppedDeliveries
    system: SystemGauges

    @classmethod
    def create(cls) -> ApiMetrics:
        registry = CollectorRegistry()
        dropped = DroppedDeliveries()
        registry.register(dropped)
        system = SystemGauges()
        registry.register(system)
        return cls(
            registry,
            Counter("http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry),
            Histogram("http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
                      registry=registry),
            Counter("jobs_enqueued", "Jobs written by the api, by kind", ["kind"], registry=registry),
            dropped,
            system,
        )


METRICS = web.AppKey("metrics", ApiMetrics)


def route_of(request: web.Request) -> str:
    """The route's canonical path (`/api/events/{event_id}`), never the raw URL."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def count_enqueued(app: web.Application, kind: str) -> None:
    app[METRICS].jobs_enqueued.labels(kind).inc()


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        route = route_of(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)


def install(app: web.Application) -> None:
    """Outermost middleware, so it sees the status the error middleware finally answered with."""
    app[METRICS] = ApiMetrics.create()
    app.middlewares.insert(0, metrics_middleware)


class DroppedDeliveries(Collector):
    """Deliveries workers acked without running (a stale or early copy, a job finished or leased elsewhere),
    as the workers counted them in Postgres: one series per service and reason, cluster-wide."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int]] = []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("eventjobs_deliveries_dropped", "Deliveries acked without running the job",
                                     labels=["service", "reason"])
        for service, reason, count in self.rows:
            family.add_metric([service, reason], count)
        yield family


class SystemGauges(Collector):
    """What the whole system holds, read at scrape time: RabbitMQ's queues (depth, ready, consumers) from
    its management API, and jobs per state from Postgres. One api answers for the cluster, so a KEDA or HPA
    rule and a Grafana panel need no exporter of their own."""

    def __init__(self) -> None:
        self.queues: list[QueueInfo] = []
        self.states: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages = GaugeMetricFamily("eventjobs_queue_messages", "Messages in a RabbitMQ queue (ready + unacked)",
                                     labels=["queue", "role"])
        ready = GaugeMetricFamily("eventjobs_queue_messages_ready", "Messages waiting for a consumer",
                                  labels=["queue", "role"])
        consumers = GaugeMetricFamily("eventjobs_queue_consumers", "Consumers of a RabbitMQ queue",
                                      labels=["queue", "role"])
        for queue in self.queues:
            messages.add_metric([queue.name, queue.role], queue.messages)
            ready.add_metric([queue.name, queue.role], queue.ready)
            consumers.add_metric([queue.name, queue.role], queue.consumers)
        jobs = GaugeMetricFamily("eventjobs_jobs", "Jobs per state", labels=["state"])
        for state, count in self.states.items():
            jobs.add_metric([state], count)
        yield from (messages, ready, consumers, jobs)


async def refresh_system(app: web.Application) -> None:
    runtime = app[RUNTIME]
    gauges = app[METRICS].system
    try:
        gauges.queues = await Management(runtime.settings).queues()
    except ManagementUnavailable:
        gauges.queues = []  # absent series, not zeros: "no consumers" must not be reported when we cannot know
    counts = await job_admin.counts_by_state(runtime.pool)
    gauges.states = {state.value: count for state, count in counts.items()}


@routes.get("/metrics", summary="Prometheus metrics", responses={200: None})
async def metrics(request: web.Request) -> web.Response:
    dropped = request.app[METRICS].dropped
    rows = await job_queries.dropped_deliveries(request.app[RUNTIME].pool)
    dropped.rows = [(row["service"], row["reason"], row["count"]) for row in rows]
    await refresh_system(request.app)
    own = request.app[METRICS]
    body = generate_latest(scrape_registry(own.registry, own.dropped, own.system))  # all api processes' counts
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
