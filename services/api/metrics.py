"""/metrics for Prometheus: requests and latency by route, jobs enqueued by kind."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from services.api.errors import Handler
from services.api.openapi import ApiRoutes

routes = ApiRoutes("metrics")

UNMATCHED = "unmatched"  # 404s keep one label value: raw URLs would let any client grow the series


@dataclass(frozen=True)
class ApiMetrics:
    """One registry per application, so several apps in one process (tests) do not collide."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    jobs_enqueued: Counter

    @classmethod
    def create(cls) -> ApiMetrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry),
            Histogram("http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
                      registry=registry),
            Counter("jobs_enqueued", "Jobs written by the api, by kind", ["kind"], registry=registry),
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


@routes.get("/metrics", summary="Prometheus metrics", responses={200: None})
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
