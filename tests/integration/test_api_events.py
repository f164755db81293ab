"""/api/events: an event and its reminder jobs commit together; moves reschedule, cancels delete."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api_probe import platform_api, queue_depth, row_counts
from tests.support.environment import TestEnvironment

DAY = timedelta(days=1)
HALF_HOUR = timedelta(minutes=30)


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


def at(delta: timedelta) -> datetime:
    return (datetime.now(UTC) + delta).replace(microsecond=0)


async def create(api: TestClient[Any, Any], starts_at: datetime, status: int = 201, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/events", json={"title": "Launch", "starts_at": starts_at.isoformat(), **fields})
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def schedule(event: dict[str, Any]) -> dict[str, datetime]:
    return {job["kind"]: datetime.fromisoformat(job["run_at"]) for job in event["scheduled_jobs"]}


async def states(db: asyncpg.Connection, event: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    rows = await db.fetch(
        "SELECT kind, state, state_reason FROM jobs WHERE args ->> 'event_id' = $1 ORDER BY created_at, kind",
        event["id"],
    )
    return [tuple(row) for row in rows]


async def test_an_event_schedules_its_reminder_and_starting_soon_jobs_in_utc(
    api: TestClient[Any, Any], env: TestEnvironment, db: asyncpg.Connection
) -> None:
    starts_at = at(3 * DAY).astimezone(ZoneInfo("Europe/Paris"))

    event = await create(api, starts_at, location="Hall 1", description="Cake.")

    assert datetime.fromisoformat(event["starts_at"]) == starts_at
    assert event["starts_at"].endswith("Z")  # returned in UTC whatever offset was sent
    assert schedule(event) == {"event.reminder": starts_at - DAY, "event.starting_soon": starts_at - HALF_HOUR}
    assert await states(db, event) == [("event.reminder", "scheduled", None),
                                       ("event.starting_soon", "scheduled", None)]
    assert await queue_depth(env) == 0  # scheduled jobs wait in Postgres until the scheduler promotes them
    fetched = await (await api.get(f"/api/events/{event['id']}")).json()
    assert fetched == event


@pytest.mark.parametrize(("starts_in", "kinds"), [
    (2 * timedelta(hours=1), {"event.starting_soon"}),
    (timedelta(minutes=10), set()),
])  # an event starting in the past is refused (tests/integration/test_api_messages.py)
async def test_only_jobs_still_in_the_future_are_written(
    api: TestClient[Any, Any], env: TestEnvironment, starts_in: timedelta, kinds: set[str]
) -> None:
    event = await create(api, at(starts_in))

    assert set(schedule(event)) == kinds
    assert (await row_counts(env))["jobs"] == len(kinds)


async def test_an_idempotency_key_replays_the_first_event_and_refuses_other_content(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    body = {"title": "Launch", "starts_at": at(3 * DAY).isoformat()}
    first = await api.post("/api/events", json=body, headers={"Idempotency-Key": "launch-1"})
    again = await api.post("/api/events", json=body, headers={"Idempotency-Key": "launch-1"})
    other = await api.post("/api/events", json={**body, "title": "Other"}, headers={"Idempotency-Key": "launch-1"})

    assert (first.status, again.status, other.status) == (201, 200, 409)
    assert (await again.json()) == (await first.json())
    assert (await other.json())["error"]["details"][0]["field"] == "Idempotency-Key"
    counts = await row_counts(env)
    assert (counts["events"], counts["jobs"]) == (1, 2)


async def test_moving_the_start_deletes_the_old_jobs_with_a_reason_and_schedules_new_ones(
    api: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    first_start = at(3 * DAY)
    event = await create(api, first_start)
    later = first_start + 2 * DAY

    response = await api.patch(f"/api/events/{event['id']}", json={"starts_at": later.isoformat()})

    assert response.status == 200, await response.text()
    moved = await response.json()
    assert schedule(moved) == {"event.reminder": later - DAY, "event.starting_soon": later - HALF_HOUR}
    history = await states(db, event)
    reason = f"event moved from {first_start.isoformat()} to {later.isoformat()}"
    assert history == [("event.reminder", "deleted", reason), ("event.starting_soon", "deleted", reason),
                       ("event.reminder", "scheduled", None), ("event.starting_soon", "scheduled", None)]

    # Back to the first start: fresh jobs again, not the deleted ones of that time.
    back = await (await api.patch(f"/api/events/{event['id']}", json={"starts_at": first_start.isoformat()})).json()
    assert schedule(back) == schedule(event)
    assert {job["id"] for job in back["scheduled_jobs"]}.isdisjoint(job["id"] for job in event["scheduled_jobs"])
    assert [state for _, state, _ in await states(db, event)].count("scheduled") == 2


async def test_editing_other_fields_keeps_the_jobs(api: TestClient[Any, Any], db: asyncpg.Connection) -> None:
    event = await create(api, at(3 * DAY), description="old")

    response = await api.patch(f"/api/events/{event['id']}", json={"title": "Renamed", "description": None,
                                                                  "starts_at": event["starts_at"]})

    edited = await response.json()
    assert (edited["title"], edited["description"]) == ("Renamed", None)
    assert edited["scheduled_jobs"] == event["scheduled_jobs"]
    assert len(await states(db, event)) == 2


async def test_cancelling_deletes_the_pending_jobs_and_closes_the_event(
    api: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    event = await create(api, at(3 * DAY))

    response = await api.post(f"/api/events/{event['id']}/cancel")

    cancelled = await response.json()
    assert response.status == 200 and cancelled["cancelled_at"] is not None
    assert cancelled["scheduled_jobs"] == []
    assert await states(db, event) == [("event.reminder", "deleted", "event cancelled"),
                                       ("event.starting_soon", "deleted", "event cancelled")]
    again = await api.post(f"/api/events/{event['id']}/cancel")
    assert again.status == 200 and (await again.json())["cancelled_at"] == cancelled["cancelled_at"]
    edit = await api.patch(f"/api/events/{event['id']}", json={"starts_at": at(5 * DAY).isoformat()})
    assert (edit.status, (await edit.json())["error"]["code"]) == (409, "event_cancelled")
    join = await api.post(f"/api/events/{event['id']}/participants", json={"email": "a@example.com", "name": "A"})
    assert join.status == 409
    assert len(await states(db, event)) == 2


async def test_participants_register_once_per_event_and_get_a_confirmation_job(
    api: TestClient[Any, Any], env: TestEnvironment, db: asyncpg.Connection
) -> None:
    event = await create(api, at(3 * DAY))
    url = f"/api/events/{event['id']}/participants"

    first = await api.post(url, json={"email": "Grace@example.com", "name": "Grace Hopper"})
    duplicate = await api.post(url, json={"email": "grace@example.com", "name": "Grace again"})

    assert (first.status, duplicate.status) == (201, 409)
    participant = await first.json()
    assert (await duplicate.json())["error"]["details"][0]["field"] == "email"
    job = await db.fetchrow("SELECT kind, args::text, state FROM jobs WHERE id = $1",
                            uuid.UUID(participant["confirmation_job_id"]))
    assert job["kind"] == "email.event_confirmation" and participant["id"] in job["args"]
    assert await queue_depth(env) == 1
    listed = await (await api.get(url)).json()
    assert [item["email"] for item in listed["items"]] == ["grace@example.com"]
    other_event = await create(api, at(4 * DAY))
    assert (await api.post(f"/api/events/{other_event['id']}/participants",
                           json={"email": "grace@example.com", "name": "Grace"})).status == 201


async def test_unknown_events_are_404(api: TestClient[Any, Any]) -> None:
    for path in (f"/api/events/{uuid.uuid4()}", "/api/events/not-a-uuid"):
        response = await api.get(path)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    assert (await api.post(f"/api/events/{uuid.uuid4()}/cancel")).status == 404
    assert (await api.post(f"/api/events/{uuid.uuid4()}/participants",
                           json={"email": "a@example.com", "name": "A"})).status == 404


async def test_the_list_pages_through_every_event_by_start_once(api: TestClient[Any, Any]) -> None:
    created = [await create(api, at(timedelta(days=n % 3 + 2))) for n in range(7)]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await api.get("/api/events", params=query)).json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert sorted(item["id"] for item in seen) == sorted(event["id"] for event in created)
    assert [item["starts_at"] for item in seen] == sorted(item["starts_at"] for item in seen)
    bad = await api.get("/api/events", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert (bad.status, (await bad.json())["error"]["details"][0]["field"]) == (422, "query.cursor")
