"""Where a newcomer lands: `/` goes to the dashboard, `/api/` lists the API, `/api/kinds` the job kinds,
and every example body in the OpenAPI document (what Swagger's "Try it out" sends) is accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.kinds import PLATFORM_KINDS
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


async def test_root_redirects_to_the_dashboard(api: TestClient[Any, Any]) -> None:
    response = await api.get("/", allow_redirects=False)

    assert response.status == 302
    assert response.headers["Location"] == "/jobs"


async def test_api_index_lists_links_that_answer(api: TestClient[Any, Any]) -> None:
    response = await api.get("/api/")

    assert response.status == 200
    body = await response.json()
    links = body["links"]
    assert {"kinds", "jobs", "events", "openapi", "docs", "dashboard", "queues"} <= set(links)
    for name, link in links.items():
        if "GET" not in link["methods"]:
            continue
        answer = await api.get(link["href"], allow_redirects=False)
        assert answer.status in (200, 302), (name, link, answer.status)


async def test_kinds_endpoint_describes_every_kind_and_its_examples_are_accepted(
    api: TestClient[Any, Any]
) -> None:
    body = await (await api.get("/api/kinds")).json()

    kinds = {item["kind"]: item for item in body["kinds"]}
    assert set(kinds) == {kind.name for kind in PLATFORM_KINDS}
    welcome = kinds["email.welcome"]
    assert welcome["queue_class"] == "critical"
    assert welcome["service"] == "email"
    assert welcome["rabbitmq_queue"] == "jobs.email"
    assert welcome["uses_default_retry"] is True
    assert welcome["retry"] == {"max_attempts": 3, "delays": [60, 300, 900]}
    assert set(welcome["args_schema"]["required"]) == {"email", "name"}
    assert welcome["args_schema"]["additionalProperties"] is False
    for name, item in kinds.items():
        response = await api.post("/api/jobs", json={"kind": name, "args": item["example_args"], "delay_seconds": 3600})
        assert response.status == 202, (name, await response.text())
        job = await response.json()
        # The queue class and the RabbitMQ queue under names that cannot be confused.
        assert (job["queue_class"], job["rabbitmq_queue"]) == (item["queue_class"], item["rabbitmq_queue"])


async def test_every_request_body_in_the_openapi_document_has_an_example_the_api_accepts(
    api: TestClient[Any, Any]
) -> None:
    document = await (await api.get("/api/openapi.json")).json()
    # Path parameters name things that must exist: an event and a recurring job of this database.
    created = await api.post("/api/events", json={"title": "For the examples", "starts_at": "2031-01-01T10:00:00Z"})
    assert created.status == 201
    recurring = await (await api.get("/api/recurring")).json()
    values = {"event_id": (await created.json())["id"], "recurring_id": recurring[0]["id"]}

    tried = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            media = operation["requestBody"]["content"]["application/json"]
            assert "example" in media, f"{method.upper()} {path} has no example body"
            url = path.format(**values)
            response = await api.request(method.upper(), url, json=media["example"])
            assert response.status < 400, (method, path, media["example"], await response.text())
            tried.append((method, path))
    assert ("post", "/api/jobs") in tried and ("post", "/api/events") in tried
