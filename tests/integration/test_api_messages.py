"""Validation answers are for people: one message per bad field, every bad field at once, no pydantic jargon;
an event that starts in the past is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.api_probe import platform_api, row_counts
from tests.support.environment import TestEnvironment

JARGON = ("Value error", "Input should", "Field required", "Extra inputs", "String should", "pydantic")


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


async def details_of(response: Any) -> dict[str, str]:
    assert response.status == 422, await response.text()
    body = await response.json()
    details = body["error"]["details"]
    fields = [item["field"] for item in details]
    assert len(fields) == len(set(fields)), f"one message per field: {details}"
    for item in details:
        assert not any(word in item["message"] for word in JARGON), item
    return {item["field"]: item["message"] for item in details}


async def test_every_bad_field_of_an_event_is_named_at_once_in_words(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    before = await row_counts(env)
    response = await api.post("/api/events", json={
        "title": "", "starts_at": "2031-05-01", "ends_at": "tomorrow", "location": 5, "start": "x"})

    messages = await details_of(response)
    assert messages == {
        "title": "must not be empty",
        "starts_at": "must include a UTC offset or Z, like 2031-05-01T18:00:00+02:00",
        "ends_at": "must be a date and time with a UTC offset, like 2031-05-01T18:00:00+02:00",
        "location": "must be text (a JSON string)",
        "start": "is not a field of this request; did you mean starts_at?",
    }
    assert await row_counts(env) == before


async def test_an_event_starting_in_the_past_is_refused_created_or_moved(api: TestClient[Any, Any]) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    messages = await details_of(await api.post("/api/events", json={"title": "Yesterday", "starts_at": past}))
    assert messages["starts_at"].startswith("must be in the future")

    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    created = await api.post("/api/events", json={"title": "Soon", "starts_at": future})
    assert created.status == 201
    event_id = (await created.json())["id"]
    moved = await api.patch(f"/api/events/{event_id}", json={"starts_at": "2020-01-01T10:00:00Z"})
    assert (await details_of(moved))["starts_at"].startswith("must be in the future")


async def test_a_job_request_names_its_bad_fields_and_arguments_in_words(api: TestClient[Any, Any]) -> None:
    response = await api.post("/api/jobs", json={"kind": "email.welcome", "args": {}, "delay": 60,
                                                 "max_attempts": 0})
    messages = await details_of(response)
    assert messages == {"delay": "is not a field of this request; did you mean delay_seconds?",
                        "max_attempts": "must be at least 1"}

    response = await api.post("/api/jobs", json={"kind": "email.welcome",
                                                 "args": {"email": "not-an-address", "nmae": "Ada"}})
    messages = await details_of(response)
    assert messages == {"args.email": "must be an email address, like ada@example.com",
                        "args.name": "is required", "args.nmae": "is not a field of this request"}


async def test_a_recurring_edit_names_a_bad_zone_and_a_bad_cron_together(api: TestClient[Any, Any]) -> None:
    recurring = await (await api.get("/api/recurring")).json()
    response = await api.patch(f"/api/recurring/{recurring[0]['id']}",
                               json={"cron": "99 * * * *", "timezone": "Mars/Olympus"})
    messages = await details_of(response)
    assert set(messages) == {"cron", "timezone"}
    assert "Mars/Olympus" in messages["timezone"]
