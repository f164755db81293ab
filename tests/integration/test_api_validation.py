"""Bad input is a 4xx naming the field, and nothing reaches Postgres or RabbitMQ.

Each case runs against a fresh database and vhost that already hold one event (so edits and
registrations have something to aim at); afterwards every table and the email queue are as before.
A valid request at the end of each case proves the probes would have seen a write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.api_probe import platform_api, queue_depth, row_counts
from tests.support.environment import TestEnvironment

FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
NAIVE = FUTURE.replace(tzinfo=None).isoformat()
INJECTED = "ada@example.com\r\nBcc: everyone@example.com"
EVENT = "{event}"  # replaced by the id of the event the case starts with


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Any  # a dict is sent as JSON, bytes as they are
    status: int
    field: str
    headers: dict[str, str] | None = None


CASES: dict[str, Case] = {
    "users: malformed JSON": Case("POST", "/api/users", b'{"email": "a@example.com",', 400, "body"),
    "users: NaN is not JSON": Case("POST", "/api/users", b'{"email": NaN}', 400, "body"),
    "users: not an object": Case("POST", "/api/users", b'["a@example.com"]', 422, "body"),
    "users: missing email": Case("POST", "/api/users", {"name": "Ada"}, 422, "email"),
    "users: wrong type": Case("POST", "/api/users", {"email": "a@example.com", "name": 5}, 422, "name"),
    "users: not an address": Case("POST", "/api/users", {"email": "ada", "name": "Ada"}, 422, "email"),
    "users: CR/LF in the address": Case("POST", "/api/users", {"email": INJECTED, "name": "Ada"}, 422, "email"),
    "users: CR/LF in the name": Case("POST", "/api/users", {"email": "a@example.com", "name": "Ada\r\nBcc: x@y"},
                                     422, "name"),
    "users: NUL in the name": Case("POST", "/api/users", {"email": "a@example.com", "name": "Ada\x00"}, 422, "name"),
    "users: unknown field": Case("POST", "/api/users", {"email": "a@example.com", "name": "A", "admin": True},
                                 422, "admin"),
    "events: naive starts_at": Case("POST", "/api/events", {"title": "T", "starts_at": NAIVE}, 422, "starts_at"),
    "events: naive ends_at": Case("POST", "/api/events", {"title": "T", "starts_at": FUTURE.isoformat(),
                                                          "ends_at": NAIVE}, 422, "ends_at"),
    "events: not a time": Case("POST", "/api/events", {"title": "T", "starts_at": "next tuesday"}, 422, "starts_at"),
    "events: out of range": Case("POST", "/api/events", {"title": "T", "starts_at": "0001-01-01T00:00:00Z"},
                                 422, "starts_at"),
    "events: ends before it starts": Case("POST", "/api/events", {
        "title": "T", "starts_at": FUTURE.isoformat(), "ends_at": (FUTURE - timedelta(hours=1)).isoformat()},
        422, "ends_at"),
    "events: CR/LF in the title": Case("POST", "/api/events", {"title": "T\nBcc: x@y", "starts_at": FUTURE.isoformat()},
                                       422, "title"),
    "events: wrong type": Case("POST", "/api/events", {"title": ["T"], "starts_at": FUTURE.isoformat()}, 422, "title"),
    "events: Idempotency-Key too long": Case("POST", "/api/events", {"title": "T", "starts_at": FUTURE.isoformat()},
                                             422, "Idempotency-Key", {"Idempotency-Key": "k" * 201}),
    "events: limit out of range": Case("GET", "/api/events?limit=0", None, 422, "query.limit"),
    "event edit: naive start": Case("PATCH", f"/api/events/{EVENT}", {"starts_at": NAIVE}, 422, "starts_at"),
    "event edit: null title": Case("PATCH", f"/api/events/{EVENT}", {"title": None}, 422, "title"),
    "event edit: ends before start": Case("PATCH", f"/api/events/{EVENT}",
                                          {"ends_at": (FUTURE - timedelta(days=1)).isoformat()}, 422, "ends_at"),
    "event edit: malformed JSON": Case("PATCH", f"/api/events/{EVENT}", b"{", 400, "body"),
    "participants: CR/LF in the address": Case("POST", f"/api/events/{EVENT}/participants",
                                               {"email": INJECTED, "name": "Ada"}, 422, "email"),
    "participants: CR/LF in the name": Case("POST", f"/api/events/{EVENT}/participants",
                                            {"email": "a@example.com", "name": "A\rB"}, 422, "name"),
    "jobs: unknown kind": Case("POST", "/api/jobs", {"kind": "email.nonsense"}, 422, "kind"),
    "jobs: arguments of the wrong type": Case("POST", "/api/jobs", {"kind": "event.reminder",
                                                                    "args": {"event_id": 12}}, 422, "args.event_id"),
    "jobs: naive run_at": Case("POST", "/api/jobs", {"kind": "maintenance.daily_report", "run_at": NAIVE},
                               422, "run_at"),
    "jobs: CR/LF in the recipient": Case("POST", "/api/jobs", {"kind": "email.send",
                                                               "args": {"to": INJECTED, "subject": "Hi"}},
                                         422, "args.to"),
    "jobs: CR/LF in the subject": Case("POST", "/api/jobs", {"kind": "email.send", "args": {
        "to": "a@example.com", "subject": "Hi\r\nBcc: everyone@example.com"}}, 422, "args.subject"),
    "jobs: NUL in the arguments": Case("POST", "/api/jobs", {"kind": "email.send", "args": {
        "to": "a@example.com", "subject": "Hi", "context": {"note": "\x00"}}}, 422, "args.context.note"),
    "jobs: Idempotency-Key too long": Case("POST", "/api/jobs", {"kind": "maintenance.daily_report"}, 422,
                                           "Idempotency-Key", {"Idempotency-Key": "k" * 5000}),
    "jobs: malformed JSON": Case("POST", "/api/jobs", b"kind=email.send", 400, "body"),
}


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env) as client:
        yield client


async def send(api: TestClient[Any, Any], method: str, path: str, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    options: dict[str, Any] = {"headers": {"Content-Type": "application/json", **(headers or {})}}
    if isinstance(body, bytes):
        options["data"] = body
    elif body is not None:
        options["json"] = body
    async with api.request(method, path, **options) as response:
        return response.status, await response.json()


async def assert_writes_are_visible(api: TestClient[Any, Any], env: TestEnvironment, before: dict[str, int]) -> None:
    status, _ = await send(api, "POST", "/api/users", {"email": "control@example.com", "name": "Control"})
    assert status == 201
    after = await row_counts(env)
    assert (after["users"], after["jobs"]) == (before["users"] + 1, before["jobs"] + 1)
    assert await queue_depth(env) == 1


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: TestClient[Any, Any], env: TestEnvironment, name: str
) -> None:
    case = CASES[name]
    status, event = await send(api, "POST", "/api/events", {"title": "Existing", "starts_at": FUTURE.isoformat()})
    assert status == 201
    before = await row_counts(env)

    status, body = await send(api, case.method, case.path.replace(EVENT, event["id"]), case.body, case.headers)

    assert status == case.status, body
    assert case.field in [detail["field"] for detail in body["error"]["details"]], body
    assert await row_counts(env) == before
    assert await queue_depth(env) == 0
    status, unchanged = await send(api, "GET", f"/api/events/{event['id']}", None)
    assert unchanged == event
    await assert_writes_are_visible(api, env, before)


async def test_a_body_over_the_limit_is_413_in_the_error_shape_and_writes_nothing(env: TestEnvironment) -> None:
    async with platform_api(env, max_body_bytes=2048) as api:
        big = {"email": "a@example.com", "name": "A" * 3000}
        status, body = await send(api, "POST", "/api/users", big)
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        assert body["error"]["details"] == [{"field": "body", "message": "at most 2048 bytes"}]
        assert (await row_counts(env))["users"] == 0
        assert await queue_depth(env) == 0
        await assert_writes_are_visible(api, env, await row_counts(env))
