"""The platform API's access rules: operator-only personal data and event writes, JSON-only bodies,
foreign Origins refused on every write, and rate limits that refuse a flood before it writes anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.api.security.ratelimit import RateLimiter
from shared.kinds import platform_registry
from tests.support.api_probe import platform_api, queue_depth, row_counts
from tests.support.environment import TestEnvironment
from tests.support.live_api import browser_session, csrf_from, running_api

OPERATOR = {"Authorization": "Bearer operator-token-0123456789"}
READ_ONLY = {"Authorization": "Bearer read-only-token-0123456789"}
TOKENS = {"api_token": "operator-token-0123456789", "api_read_only_token": "read-only-token-0123456789"}
EVIL = {"Origin": "http://evil.example"}


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env, **TOKENS) as client:
        yield client


def later(days: int = 3) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def call(api: TestClient[Any, Any], method: str, path: str, status: int, **options: Any) -> Any:
    response = await api.request(method, path, **options)
    text = await response.text()
    assert response.status == status, f"{method} {path}: {response.status} {text}"
    return json.loads(text) if text else None


async def new_event(api: TestClient[Any, Any]) -> dict[str, Any]:
    event: dict[str, Any] = await call(api, "POST", "/api/events", 201, headers=OPERATOR,
                                       json={"title": "Launch", "starts_at": later()})
    return event


async def test_anonymous_callers_get_401_on_participant_lists_and_event_writes(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    event = await new_event(api)
    path = f"/api/events/{event['id']}"
    await call(api, "POST", f"{path}/participants", 201, json={"email": "ada@example.com", "name": "Ada"})
    before = await row_counts(env)

    for method, url, body in [("GET", f"{path}/participants", None), ("GET", "/api/events", None),
                              ("POST", "/api/events", {"title": "Mine", "starts_at": later()}),
                              ("PATCH", path, {"starts_at": later(9)}), ("POST", f"{path}/cancel", None)]:
        refused = await call(api, method, url, 401, json=body)
        assert refused["error"]["code"] == "unauthorized"
        assert "ada@example.com" not in json.dumps(refused)

    assert await row_counts(env) == before
    # What a sign-up page needs stays public.
    assert (await call(api, "GET", path, 200))["title"] == "Launch"
    await call(api, "POST", "/api/users", 201, json={"email": "grace@example.com", "name": "Grace"})
    # Operators and read-only callers see the list; only operators change events.
    listed = await call(api, "GET", f"{path}/participants", 200, headers=READ_ONLY)
    assert [item["email"] for item in listed["items"]] == ["ada@example.com"]
    await call(api, "PATCH", path, 403, headers=READ_ONLY, json={"title": "Renamed"})
    await call(api, "POST", f"{path}/cancel", 403, headers=READ_ONLY)
    await call(api, "POST", "/api/events", 403, headers=READ_ONLY, json={"title": "X", "starts_at": later()})
    assert (await call(api, "PATCH", path, 200, headers=OPERATOR, json={"title": "Renamed"}))["title"] == "Renamed"


async def test_a_cross_origin_text_plain_post_is_refused_and_writes_nothing(
    api: TestClient[Any, Any], env: TestEnvironment
) -> None:
    event = await new_event(api)
    path = f"/api/events/{event['id']}"
    before, depth = await row_counts(env), await queue_depth(env)
    form = json.dumps({"email": "victim@example.com", "name": "Victim"})

    # What a page on another site can send without a preflight: text/plain, its own Origin.
    for url in ("/api/users", f"{path}/participants"):
        refused = await call(api, "POST", url, 403, data=form, headers={**EVIL, "Content-Type": "text/plain"})
        assert refused["error"]["code"] == "forbidden"
        await call(api, "POST", url, 403, json={"email": "victim@example.com", "name": "V"}, headers=EVIL)
    # Credentials do not make a foreign Origin acceptable.
    await call(api, "POST", f"{path}/cancel", 403, headers={**EVIL, **OPERATOR})
    await call(api, "PATCH", path, 403, json={"title": "Pwned"}, headers={**EVIL, **OPERATOR})
    # Without an Origin, a body must still be declared JSON.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        refused = await call(api, "POST", "/api/users", 415, data=form.encode(), headers=headers)
        assert refused["error"]["details"] == [{"field": "Content-Type", "message": "must be application/json"}]

    assert await row_counts(env) == before
    assert await queue_depth(env) == depth
    assert (await call(api, "GET", path, 200))["cancelled_at"] is None
    # The same site's own pages are served.
    own = {"Origin": str(api.make_url("")).rstrip("/")}
    await call(api, "POST", "/api/users", 201, json={"email": "ok@example.com", "name": "Ok"}, headers=own)


async def test_a_sign_up_flood_gets_429_with_retry_after_and_writes_no_row_or_job(env: TestEnvironment) -> None:
    async with platform_api(env, rate_limit_client_requests=5, rate_limit_client_seconds=60) as api:
        before = await row_counts(env)
        responses = await asyncio.gather(*(
            api.post("/api/users", json={"email": f"flood{n}@example.com", "name": "Flood"}) for n in range(40)))
        statuses = sorted(response.status for response in responses)
        limited = [response for response in responses if response.status == 429]

        assert statuses == [201] * 5 + [429] * 35
        retry_after = int(limited[0].headers["Retry-After"])
        assert 1 <= retry_after <= 12  # one request per 60 s / 5
        body = await limited[0].json()
        assert body["error"]["code"] == "rate_limited" and body["error"]["details"][0]["field"] == "client"
        after = await row_counts(env)
        assert after["users"] - before["users"] == 5
        assert after["jobs"] - before["jobs"] == 5


async def test_mails_to_one_address_are_limited_whichever_endpoint_and_client_sends_them(env: TestEnvironment) -> None:
    async with platform_api(env, rate_limit_email_requests=2, rate_limit_email_seconds=3600) as api:
        events = [await new_event_open(api) for _ in range(3)]
        await call(api, "POST", "/api/users", 201, json={"email": "Target@example.com", "name": "T"})
        await call(api, "POST", f"/api/events/{events[0]}/participants", 201,
                   json={"email": "target@example.com", "name": "T"})
        before = await row_counts(env)
        refused = await call(api, "POST", f"/api/events/{events[1]}/participants", 429,
                             json={"email": "TARGET@example.com", "name": "T"})
        assert refused["error"]["details"][0]["field"] == "email"
        assert await row_counts(env) == before
        await call(api, "POST", f"/api/events/{events[2]}/participants", 201,
                   json={"email": "other@example.com", "name": "O"})


async def new_event_open(api: TestClient[Any, Any]) -> str:
    """Without API_TOKEN a loopback caller is an operator."""
    event = await call(api, "POST", "/api/events", 201, json={"title": "Open", "starts_at": later()})
    return str(event["id"])


async def test_dashboard_logins_are_limited_per_client_address(env: TestEnvironment) -> None:
    settings = env.settings(login_rate_limit_requests=3, login_rate_limit_seconds=300, **TOKENS)
    async with running_api(settings, platform_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base) as browser:
            token = csrf_from(await (await browser.get(f"{base}/jobs/login")).text())
            for _ in range(3):
                async with browser.post(f"{base}/jobs/login", data={"token": "guess", "csrf_token": token}) as wrong:
                    assert wrong.status == 401
            async with browser.post(f"{base}/jobs/login", allow_redirects=False,
                                    data={"token": TOKENS["api_token"], "csrf_token": token}) as refused:
                assert refused.status == 429
                assert int(refused.headers["Retry-After"]) >= 1
                assert "too many login attempts" in await refused.text()


def test_a_bucket_allows_a_burst_then_one_request_per_interval() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 30, clock=lambda: now[0])

    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(10)
    assert limiter.take("b") is None  # keys do not share
    now[0] = 10.0
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(10)
    assert RateLimiter(0, 30).take("a") is None  # 0 turns the limit off
