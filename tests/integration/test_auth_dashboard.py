"""Who may see and steer the dashboard and the operator API: loopback, tokens, sessions, CSRF, Origin, read-only."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from services.api.app import create_app
from services.api.security.access import ENQUEUE_PATHS
from services.api.security.auth import is_loopback
from services.api.security.sessions import SESSION_COOKIE
from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.jobs import JobState
from shared.runtime import Runtime
from shared.settings import Settings
from tests.support.environment import TestEnvironment
from tests.support.kinds import test_registry
from tests.support.live_api import browser_session, csrf_from, non_loopback_address, running_api

OPERATOR_TOKEN = "operator-token-0123456789"
READ_ONLY_TOKEN = "read-only-token-0123456789"


async def failed_job(runtime: Runtime) -> uuid.UUID:
    job_id = uuid.uuid4()
    await job_queries.insert_job(runtime.pool, job_queries.NewJob(
        id=job_id, kind="test.noop", args={"n": 1}, queue="default", service="test", priority=5,
        state=JobState.FAILED, max_attempts=3, run_at=datetime.now(UTC),
    ))
    return job_id


async def status_of(session: aiohttp.ClientSession, method: str, url: str, **options: Any) -> tuple[int, str]:
    async with session.request(method, url, allow_redirects=False, **options) as response:
        return response.status, await response.text()


def action_routes(settings: Settings) -> list[tuple[str, str]]:
    """Every state-changing route the app serves to operators, read from its router (so none is forgotten)."""
    app = create_app(settings, registry=test_registry())
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method in ("POST", "PATCH", "PUT", "DELETE") and path.startswith(("/jobs", "/api/jobs",
                                                                                   "/api/recurring")):
            if path not in ("/jobs/login", "/jobs/logout", *ENQUEUE_PATHS):  # enqueueing is not an operator action
                found.add((route.method, path))
    return sorted(found)


def fill(path: str, job_id: uuid.UUID) -> str:
    return path.replace("{job_id}", str(job_id)).replace("{recurring_id}", "generate-daily-report")


async def test_no_credentials_from_a_non_loopback_address_is_401(env: TestEnvironment, runtime: Runtime) -> None:
    address = non_loopback_address()
    job_id = await failed_job(runtime)
    if address is None:  # a machine with loopback only: check the decision on a request from a remote peer
        class Transport:
            def get_extra_info(self, name: str) -> Any:
                return ("203.0.113.7", 40000) if name == "peername" else None

        request = make_mocked_request("GET", "/jobs", headers={"X-Forwarded-For": "127.0.0.1"},
                                      transport=Transport())
        assert not is_loopback(request)
        return
    async with running_api(env.settings(), test_registry(), host="0.0.0.0") as port, browser_session() as client:
        forged = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}
        for method, path in [("GET", "/jobs"), ("GET", "/jobs/list?state=failed"), ("GET", f"/jobs/job/{job_id}"),
                             ("GET", "/jobs/realtime.json"), ("GET", "/api/jobs"), ("GET", "/api/recurring"),
                             ("POST", f"/jobs/job/{job_id}/requeue"), ("POST", f"/api/jobs/{job_id}/requeue")]:
            status, body = await status_of(client, method, f"http://{address}:{port}{path}", headers=forged)
            assert status == 401, f"{method} {path} from {address}: {status}"
            assert str(job_id) not in body
        # The same server answers a loopback client: the peer address is what decided.
        status, _ = await status_of(client, "GET", f"http://127.0.0.1:{port}/jobs")
        assert status == 200
    assert await job_admin.job_state(runtime.pool, job_id) == "failed"


async def test_with_api_token_a_login_form_sets_a_signed_http_only_session(
    env: TestEnvironment, runtime: Runtime
) -> None:
    settings = env.settings(api_token=OPERATOR_TOKEN, session_secret="secret-one")
    async with running_api(settings, test_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base) as browser:
            status, html = await status_of(browser, "GET", f"{base}/jobs/list?state=failed")
            assert status == 401 and 'name="token"' in html  # even loopback needs credentials now
            token = csrf_from(html)

            status, html = await status_of(browser, "POST", f"{base}/jobs/login",
                                           data={"token": "wrong", "csrf_token": token, "next": "/jobs"})
            assert status == 401 and "not valid" in html
            status, _ = await status_of(browser, "POST", f"{base}/jobs/login", data={"token": OPERATOR_TOKEN})
            assert status == 403  # a login without the CSRF token is refused too

            async with browser.post(f"{base}/jobs/login", allow_redirects=False, data={
                "token": OPERATOR_TOKEN, "csrf_token": token, "next": "/jobs/list?state=failed",
            }) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/jobs/list?state=failed"
                cookie = next(value for value in response.headers.getall("Set-Cookie")
                              if value.startswith(SESSION_COOKIE))
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and OPERATOR_TOKEN not in cookie
            status, html = await status_of(browser, "GET", f"{base}/jobs")
            assert status == 200 and "Log out" in html
            session_value = re.search(rf"{SESSION_COOKIE}=([^;]+)", cookie).group(1)  # type: ignore[union-attr]

            status, _ = await status_of(browser, "POST", f"{base}/jobs/logout",
                                        data={"csrf_token": csrf_from(html)})
            assert status == 303
            status, _ = await status_of(browser, "GET", f"{base}/jobs")
            assert status == 401

        async with browser_session() as other:
            tampered = session_value[:-2] + ("AA" if not session_value.endswith("AA") else "BB")
            for value in (tampered, "garbage", ""):
                status, _ = await status_of(other, "GET", f"{base}/jobs", cookies={SESSION_COOKIE: value})
                assert status == 401
            status, _ = await status_of(other, "GET", f"{base}/jobs", cookies={SESSION_COOKIE: session_value})
            assert status == 200  # the session itself, replayed, is still valid until it expires
            status, _ = await status_of(other, "GET", f"{base}/api/jobs",
                                        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            assert status == 200
            status, _ = await status_of(other, "GET", f"{base}/api/jobs", headers={"Authorization": "Bearer nope"})
            assert status == 401

    # Rotating the token ends the sessions opened with the old one, even with the same signing secret.
    rotated = env.settings(api_token="a-new-operator-token", session_secret="secret-one")
    async with running_api(rotated, test_registry()) as port, browser_session() as client:
        status, _ = await status_of(client, "GET", f"http://127.0.0.1:{port}/jobs",
                                    cookies={SESSION_COOKIE: session_value})
        assert status == 401


async def test_posts_without_csrf_token_or_from_a_foreign_origin_are_refused(
    env: TestEnvironment, runtime: Runtime
) -> None:
    job_id = await failed_job(runtime)
    async with running_api(env.settings(), test_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base) as browser, browser_session(Origin=base) as other_browser:
            token = csrf_from(await (await browser.get(f"{base}/jobs/job/{job_id}")).text())
            foreign_token = csrf_from(await (await other_browser.get(f"{base}/jobs/job/{job_id}")).text())
            url = f"{base}/jobs/job/{job_id}/requeue"

            status, html = await status_of(browser, "POST", url, data={})
            assert status == 403 and "CSRF" in html
            status, _ = await status_of(browser, "POST", url, data={"csrf_token": foreign_token})
            assert status == 403  # a token only works with the cookie of the browser it was made for
            status, _ = await status_of(browser, "POST", url, data={"csrf_token": token},
                                        headers={"Origin": "http://evil.example"})
            assert status == 403
            status, _ = await status_of(browser, "POST", url, data={"csrf_token": token},
                                        headers={"Origin": "null"})
            assert status == 403
            status, _ = await status_of(browser, "POST", f"{base}/api/jobs/{job_id}/requeue",
                                        headers={"Origin": "http://evil.example"})
            assert status == 403
            status, _ = await status_of(browser, "GET", url)
            assert status == 405  # GET never changes state
            assert await job_admin.job_state(runtime.pool, job_id) == "failed"

            status, _ = await status_of(browser, "POST", url, data={"csrf_token": token})
            assert status == 303
            assert await job_admin.job_state(runtime.pool, job_id) == "enqueued"


@pytest.fixture(params=["dashboard_read_only", "read_only_token"])
async def read_only(
    request: pytest.FixtureRequest, env: TestEnvironment
) -> AsyncIterator[tuple[Settings, dict[str, str]]]:
    """Settings for one way of being read-only, and the headers that authenticate as that role."""
    if request.param == "dashboard_read_only":
        yield env.settings(dashboard_read_only=True), {}
    else:
        yield (env.settings(api_token=OPERATOR_TOKEN, api_read_only_token=READ_ONLY_TOKEN),
               {"Authorization": f"Bearer {READ_ONLY_TOKEN}"})


async def test_the_read_only_role_sees_everything_and_gets_403_on_every_action(
    read_only: tuple[Settings, dict[str, str]], runtime: Runtime
) -> None:
    settings, headers = read_only
    job_id = await failed_job(runtime)
    routes = action_routes(settings)
    assert len([path for _, path in routes if path.startswith("/jobs")]) >= 8
    assert len([path for _, path in routes if path.startswith("/api")]) >= 5
    async with running_api(settings, test_registry()) as port:
        base = f"http://127.0.0.1:{port}"
        async with browser_session(Origin=base, **headers) as browser:
            if settings.api_read_only_token:  # the dashboard's way in: the login form with the read-only token
                async with aiohttp.ClientSession() as anonymous:
                    login_page = await (await anonymous.get(f"{base}/jobs/login")).text()
                del browser.headers["Authorization"]
                token = csrf_from(await (await browser.get(f"{base}/jobs/login")).text())
                status, _ = await status_of(browser, "POST", f"{base}/jobs/login",
                                            data={"token": READ_ONLY_TOKEN, "csrf_token": token})
                assert status == 303 and 'name="token"' in login_page
            for path in ("/jobs", f"/jobs/job/{job_id}", "/jobs/list?state=failed", "/jobs/recurring",
                         "/jobs/servers", "/jobs/queues"):
                status, html = await status_of(browser, "GET", base + path)
                assert status == 200, path
                assert "read-only" in html and ">Requeue<" not in html and "Trigger now" not in html
            token = csrf_from(await (await browser.get(f"{base}/jobs/job/{job_id}")).text())
            for method, path in routes:
                url = base + fill(path, job_id)
                if path.startswith("/jobs"):
                    form = {"csrf_token": token, "do": "requeue-matching", "state": "failed", "id": str(job_id),
                            "cron": "* * * * *", "timezone": "UTC"}
                    status, body = await status_of(browser, method, url, data=form)
                else:
                    status, body = await status_of(browser, method, url, headers=headers,
                                                   json={"ids": [str(job_id)], "enabled": False})
                assert status == 403, f"{method} {path}: {status} {body[:200]}"
                assert "read-only" in body
    assert await job_admin.job_state(runtime.pool, job_id) == "failed"
    recurring = await runtime.pool.fetchrow(
        "SELECT cron, enabled FROM recurring_jobs WHERE id = 'generate-daily-report'")
    assert (recurring["cron"], recurring["enabled"]) == ("0 6 * * *", True)
    assert await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE recurring_id IS NOT NULL") == 0
