"""The Grafana dashboard and the Prometheus scrape example that ship in monitoring/ are true of the code:
the JSON loads, and every query names a metric family the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from services.api.routes.metrics import ApiMetrics
from shared import job_metrics

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
METRIC = re.compile(r"\b(?:eventjobs_|http_|jobs_)[a-z_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported() -> set[str]:
    """Family names as Prometheus shows them, from the registries the services serve."""
    names = set()
    for registry in (job_metrics.REGISTRY, ApiMetrics.create().registry):
        for family in registry.collect():
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_the_list_of_exported_families_is_what_the_registries_hold() -> None:
    assert exported() == job_metrics.EXPORTED


def test_every_grafana_query_names_an_exported_metric() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 10
    names = exported()
    covered = set()
    for query in queries:
        found = METRIC.findall(query)
        assert found, f"no metric in {query!r}"
        for name in found:
            family = next((name.removesuffix(suffix) for suffix in HISTOGRAM_SERIES
                           if name.endswith(suffix) and name.removesuffix(suffix) in names), name)
            assert family in names, f"{query!r} names {name}, which no service exports"
            covered.add(family)
    # Everything an operator needs from the issue is on the dashboard.
    assert {"eventjobs_jobs_processed_total", "eventjobs_job_duration_seconds", "eventjobs_job_lateness_seconds",
            "eventjobs_job_retries_total", "eventjobs_messages_parked_total", "eventjobs_jobs_in_flight",
            "eventjobs_queue_messages", "eventjobs_queue_consumers", "eventjobs_scheduler_fires_total",
            "eventjobs_scheduler_misfires_total"} <= covered


def test_the_prometheus_example_scrapes_the_api_and_the_workers() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"eventjobs-api", "eventjobs-workers"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    assert len(jobs["eventjobs-workers"]["static_configs"]) == 3
