"""The first hour of a new user, in headless Chromium: land on /, sign up, create an event, watch the
Scheduled list with its run times, fail a job, read its page, requeue it, purge the parking lot, open
the report. Screenshots of each step go to docs/screenshots/first-hour-*.png."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Dialog, expect

from services.email_worker.handlers import build_handlers as email_handlers
from services.maintenance_worker.handlers import build_handlers as maintenance_handlers
from shared.kinds import EMAIL_SERVICE, MAINTENANCE_SERVICE, platform_registry
from tests.conftest import StartWorker
from tests.e2e.test_dashboard import SCREENSHOTS, STEP_TIMEOUT_MS
from tests.support.environment import TestEnvironment
from tests.support.live_api import running_api
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(240)


async def test_the_first_hour(
    browser: Browser, env: TestEnvironment, sink: SmtpSink, start_worker: StartWorker
) -> None:
    overrides: dict[str, Any] = {"smtp_port": sink.port, "retry_attempts": 1}
    settings = env.settings(**overrides)
    await start_worker(registry=platform_registry(), handlers=email_handlers(settings), service=EMAIL_SERVICE,
                       **overrides)
    await start_worker(registry=platform_registry(), handlers=maintenance_handlers(settings),
                       service=MAINTENANCE_SERVICE, **overrides)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async with running_api(settings, platform_registry()) as port, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"

        async def call(method: str, path: str, status: int, **options: Any) -> Any:
            async with http.request(method, base + path, **options) as response:
                assert response.status == status, await response.text()
                return await response.json()

        # Sign up and create an event, as the README's first examples do.
        await call("POST", "/api/users", 201, json={"email": "ada@example.com", "name": "Ada"})
        await sink.wait_for(1, recipient="ada@example.com")
        # 20 minutes short of 3 days: every relative time below stays inside its hour however fast the page
        # comes (at exactly 3 days, the reminder 48 h ahead rounded to "in 2 d" on a quick run).
        starts = (datetime.now(UTC) + timedelta(days=3, minutes=-20)).replace(microsecond=0).isoformat()
        event = await call("POST", "/api/events", 201, json={"title": "Launch", "starts_at": starts,
                                                           "timezone": "Europe/Berlin"})
        assert {job["kind"] for job in event["scheduled_jobs"]} == {"event.reminder", "event.starting_soon"}

        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(STEP_TIMEOUT_MS)

        def accept(dialog: Dialog) -> None:
            asyncio.get_running_loop().create_task(dialog.accept())

        page.on("dialog", accept)

        # `/` is the dashboard.
        await page.goto(base + "/")
        await expect(page).to_have_url(base + "/jobs")
        await expect(page.locator("h1")).to_have_text("Overview")
        await page.screenshot(path=str(SCREENSHOTS / "first-hour-1-overview.png"), full_page=True)

        # The Scheduled list says when the reminders run, soonest first.
        await page.goto(base + "/jobs/list?state=scheduled")
        await expect(page.locator("table.jobs-table thead")).to_contain_text("Runs at")
        rows = page.locator("table.jobs-table tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("event.reminder")
        await expect(rows.nth(0).locator(".runs-at")).to_contain_text(" UTC in 47 h")  # start - 1 day: 47 h 40 min
        await expect(rows.nth(1).locator(".runs-at")).to_contain_text(" UTC in 2 d 23 h")  # start - 30 min: 71 h 10 min
        await page.screenshot(path=str(SCREENSHOTS / "first-hour-2-scheduled.png"), full_page=True)

        # A job fails: the recipient's server refuses it for good.
        sink.reject("nobody@example.com")
        failing = await call("POST", "/api/jobs", 202, json={
            "kind": "email.send", "args": {"to": "nobody@example.com", "subject": "Hello",
                                          "context": {"body": "Doors open at 18:00."}}})

        async def state() -> str:
            return str((await call("GET", f"/api/jobs/{failing['id']}", 200))["state"])

        async def failed() -> bool:
            return await state() == "failed"

        await eventually(failed, timeout=60, what="the refused email to fail")
        await page.goto(f"{base}/jobs/job/{failing['id']}")
        await expect(page.locator(".errors-panel")).to_contain_text("550")
        await page.screenshot(path=str(SCREENSHOTS / "first-hour-3-failed-job.png"), full_page=True)

        # Requeue it from its page: it runs again, fails again, and is counted as attempt 2.
        await page.get_by_role("button", name="Requeue").click()

        async def failed_twice() -> bool:
            history = (await call("GET", f"/api/jobs/{failing['id']}", 200))["history"]
            return sum(1 for step in history if step["state"] == "failed") == 2

        await eventually(failed_twice, timeout=60, what="the requeued run to fail again")
        await page.reload()
        await expect(page.locator(".attempt-no").first).to_have_text("attempt 2")

        # The parking lot holds one copy of it (the first went with the requeue); purge it.
        await page.goto(base + "/jobs/queues")
        parked = page.locator('input[form="purge-form"]')
        await expect(parked).to_have_count(1)
        await page.screenshot(path=str(SCREENSHOTS / "first-hour-4-parking-lot.png"), full_page=True)
        await page.get_by_role("button", name="Purge all").click()
        await expect(page.locator(".notice")).to_contain_text("Removed from the parking lot")
        await expect(page.locator("#parking-lot")).to_contain_text("The parking lot is empty.")

        # The daily report: run it now, then read it.
        report = await call("POST", "/api/jobs", 202, json={"kind": "maintenance.daily_report"})

        async def reported() -> bool:
            return (await call("GET", f"/api/jobs/{report['id']}", 200))["state"] == "succeeded"

        await eventually(reported, timeout=60, what="the daily report")
        await page.get_by_role("link", name="Reports").click()
        await expect(page.locator("h1")).to_have_text("Reports")
        await expect(page.locator("section.report")).to_have_count(1)
        await page.screenshot(path=str(SCREENSHOTS / "first-hour-5-reports.png"), full_page=True)
        assert uuid.UUID(report["id"])
