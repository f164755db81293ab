"""The API describes itself truly: OpenAPI 3.1 from the served routes, Swagger UI from packaged assets,
metrics by route, and schemathesis finding no 5xx and no response that breaks the schema."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.api.app import create_app
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.smtp import free_port

SCHEMATHESIS_CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# On the platform's own resources, also: input the schema forbids is refused (the data checks of the others'
# operators endpoints are theirs to tighten).
STRICT_CHECKS = f"{SCHEMATHESIS_CHECKS},negative_data_rejection"
STRICT_TAGS = ("users", "events", "participants")
EXAMPLES_PER_OPERATION = 25
# Served with a token as in production, so the document's `security` is true of the server and the
# operations that declare it answer a request without the token with 401.
API_TOKEN = "schemathesis-token-0123456789"


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


async def test_the_document_is_openapi_3_1_and_lists_every_api_route(api: TestClient[Any, Any]) -> None:
    document = await (await api.get("/api/openapi.json")).json()

    assert document["openapi"] == "3.1.0"
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None and route.method in {"GET", "POST", "PATCH", "PUT", "DELETE"}
        and (route.resource.canonical.startswith("/api/") or route.resource.canonical in {"/healthz", "/readyz",
                                                                                          "/metrics"})
        and not route.resource.canonical.startswith(("/api/docs", "/api/openapi.json"))
    }
    assert served - documented == set()
    assert {("POST", "/api/users"), ("POST", "/api/events"), ("PATCH", "/api/events/{event_id}"),
            ("POST", "/api/events/{event_id}/cancel"), ("POST", "/api/events/{event_id}/participants")} <= documented
    create = document["paths"]["/api/events"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventIn"}
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= create["parameters"][0].items()


async def test_swagger_ui_is_served_from_the_package_without_a_cdn(api: TestClient[Any, Any]) -> None:
    page = await (await api.get("/api/docs")).text()

    assert "swagger-ui" in page and "http" not in page.replace('charset="utf-8"', "")  # no absolute asset URLs
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js"):
        assert f"/api/docs/assets/{asset}" in page
        response = await api.get(f"/api/docs/assets/{asset}")
        assert response.status == 200, asset
        assert len(await response.read()) > 100
    assert "/api/openapi.json" in await (await api.get("/api/docs/assets/docs-init.js")).text()


async def test_metrics_count_requests_by_route_pattern_not_raw_url(api: TestClient[Any, Any]) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    for event_id in ids:
        assert (await api.get(f"/api/events/{event_id}")).status == 404
    assert (await api.get("/no/such/page")).status == 404

    metrics = await (await api.get("/metrics")).text()

    assert 'http_requests_total{method="GET",route="/api/events/{event_id}",status="404"} 3.0' in metrics
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in metrics
    assert 'http_request_duration_seconds_count{method="GET",route="/api/events/{event_id}"} 3.0' in metrics
    assert not any(str(event_id) in metrics for event_id in ids)


@pytest.fixture
async def served_api(env: TestEnvironment) -> AsyncIterator[str]:
    """The app on a real TCP port, for a client in another process."""
    runner = web.AppRunner(create_app(env.settings(api_token=API_TOKEN)), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def schemathesis(base_url: str, report_dir: Path, checks: str, *options: str) -> str:
    # One worker: with two, hypothesis' lambda descriptions call ast.parse from two threads at once, which
    # CPython 3.11 sometimes answers with "AST constructor recursion depth mismatch" (a runtime error, not ours).
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base_url}/api/openapi.json",
        "--checks", checks, "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "1",
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
        "--suppress-health-check", "too_slow", "--report", "junit", "--report-dir", str(report_dir),
        "--header", f"Authorization: Bearer {API_TOKEN}", *options,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"}
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


async def test_schemathesis_finds_no_server_error_and_no_response_outside_the_schema(
    served_api: str, tmp_path: Path
) -> None:
    """Every operation the document lists, whoever wrote it: a few hundred cases or more."""
    report = await schemathesis(served_api, tmp_path, SCHEMATHESIS_CHECKS)

    tested = re.search(r"(\d+) generated, (\d+) passed", report)
    assert tested is not None and int(tested.group(1)) >= 300 and tested.group(1) == tested.group(2), report


async def test_schemathesis_finds_input_the_schema_forbids_refused_by_the_platform_resources(
    served_api: str, tmp_path: Path
) -> None:
    tags = [option for tag in STRICT_TAGS for option in ("--include-tag", tag)]
    report = await schemathesis(served_api, tmp_path, STRICT_CHECKS, *tags)

    assert re.search(r"Tested: +[1-9]", report), report
