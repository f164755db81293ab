"""Prometheus metrics after a burst of jobs: every family the services export is present with its labels,
workers serve /metrics and /healthz on their own port, and the api adds RabbitMQ's queues and job states."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shared import job_metrics
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.waiting import eventually

Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return sum(v for got, v in found.get(name, []) if labels.items() <= got.items())


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env, registry=test_registry()) as client:
        yield client


async def test_a_burst_of_jobs_shows_in_every_family(
    api: TestClient[Any, Any], runtime: Runtime, start_worker: StartWorker
) -> None:
    before = samples(job_metrics.exposition().decode())
    await start_worker()
    for n in range(20):
        await runtime.client.enqueue("test.noop", {"n": n})
    for _ in range(2):
        await runtime.client.enqueue("test.permanent", {})
    await runtime.client.enqueue("test.slow_retry", {})

    async with job_metrics.serve_metrics(0) as port, aiohttp.ClientSession() as http:
        async def scraped() -> Samples | None:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                found = samples(await response.text())
            done = value(found, "eventjobs_jobs_processed_total", service="test", kind="test.noop",
                         outcome="succeeded") - value(before, "eventjobs_jobs_processed_total", service="test",
                                                      kind="test.noop", outcome="succeeded")
            return found if done >= 20 and value(found, "eventjobs_job_retries_total", kind="test.slow_retry") > \
                value(before, "eventjobs_job_retries_total", kind="test.slow_retry") else None

        found = await eventually(scraped, timeout=60, what="the burst counted on the worker's /metrics")
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200 and (await response.json()) == {"status": "ok"}

    def grew(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    assert grew("eventjobs_jobs_processed_total", service="test", kind="test.permanent", outcome="failed") == 2
    assert grew("eventjobs_jobs_processed_total", service="test", kind="test.slow_retry", outcome="retried") == 1
    assert grew("eventjobs_job_duration_seconds_count", service="test", kind="test.noop") >= 20
    assert grew("eventjobs_job_lateness_seconds_count", service="test", kind="test.noop") >= 20
    assert grew("eventjobs_messages_parked_total", service="test") >= 2
    assert any(labels == {"service": "test"} for labels, _ in found["eventjobs_jobs_in_flight"])
    for name in ("eventjobs_scheduler_fires_total", "eventjobs_scheduler_misfires_total",
                 "eventjobs_scheduler_promoted_total"):
        assert name in found or name.removesuffix("_total") in job_metrics.exposition().decode()

    # The api: RabbitMQ's queues (read from the management API) and jobs per state, beside its own families.
    async def api_scraped() -> Samples | None:
        text = await (await api.get("/metrics")).text()
        got = samples(text)
        return got if value(got, "eventjobs_queue_consumers", queue="jobs.test") >= 1 else None

    served = await eventually(api_scraped, timeout=60, interval=0.5, what="jobs.test's consumer in the api's /metrics")
    assert value(served, "eventjobs_queue_messages", queue="jobs.dead", role="dead") >= 0
    assert ("eventjobs_queue_messages_ready" in served and value(served, "eventjobs_jobs", state="succeeded") >= 20)
    assert "eventjobs_deliveries_dropped_total" in (await (await api.get("/metrics")).text())
