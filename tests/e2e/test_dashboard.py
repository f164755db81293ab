"""The /jobs dashboard in headless Chromium against the running api, a real worker, Postgres and RabbitMQ.

Each step is asserted on the page as an operator would see it. The screenshots written to
docs/screenshots/ are the ones the README shows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, expect

from shared.db import job_admin
from shared.jobs import QueueClass
from shared.kinds import Args
from shared.messaging.consumer import JobContext
from shared.registry import JobKind
from shared.runtime import Runtime, open_runtime
from shared.settings import Settings
from tests.conftest import StartWorker
from tests.support.environment import TestEnvironment
from tests.support.kinds import BROKEN, TEST_HANDLERS, TEST_SERVICE, gate, test_registry
from tests.support.live_api import running_api
from tests.support.waiting import eventually

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
XSS = "<script>alert(1)</script>"
STEP_TIMEOUT_MS = 30_000  # generous: the CI machine has two busy cores


@pytest.fixture
async def base_url(env: TestEnvironment) -> AsyncIterator[str]:
    async with running_api(env.settings(), test_registry()) as port:
        yield f"http://127.0.0.1:{port}"


class Watched:
    """Dialogs and console errors of a page: an alert would mean injected script ran."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        asyncio.get_running_loop().create_task(dialog.dismiss())

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


async def a_week_of_history(pool: asyncpg.Pool) -> None:
    """Finished jobs spread over the last 7 days, so the history graphs have a shape in the screenshots.

    The realtime graph, the counts and every job the test acts on come from the real worker.
    """
    await pool.execute(
        """INSERT INTO jobs (id, kind, args, queue, service, priority, state, max_attempts, run_at,
                             finished_at, created_at, updated_at)
           SELECT gen_random_uuid(), 'test.noop', jsonb_build_object('n', g), 'default', 'test', 5,
                  CASE WHEN g % 11 = 0 THEN 'failed' ELSE 'succeeded' END, 3, t, t, t, t
             FROM (SELECT g, now() - interval '7 days' * power(random(), 1.4) - interval '2 minutes' AS t
                     FROM generate_series(1, 1500) AS g) AS spread
            -- busier in the day than at night, as an event platform is
            WHERE random() < 0.55 + 0.45 * sin(extract(hour FROM t) / 24.0 * pi())""")
    await pool.execute(
        """UPDATE job_states s SET created_at = j.updated_at
             FROM jobs j WHERE j.id = s.job_id AND j.kind = 'test.noop' AND j.args ? 'n'
              AND j.updated_at < now() - interval '1 minute'""")


async def state_of(runtime: Runtime, job_id: uuid.UUID) -> str | None:
    return await job_admin.job_state(runtime.pool, job_id)


async def test_an_operator_finds_a_failed_job_fixes_it_and_steers_recurring_jobs(
    browser: Browser, base_url: str, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    await a_week_of_history(runtime.pool)
    await runtime.pool.execute(
        """INSERT INTO recurring_jobs (id, kind, args, cron, timezone)
           VALUES ('warm-cache', 'test.noop', '{"n": 42}', '15 4 * * *', 'Europe/Paris')""")

    recipient = f"erin.{uuid.uuid4().hex[:8]}@example.org"
    BROKEN.add(recipient)
    try:
        failing = await runtime.client.enqueue("test.until_fixed", {"switch": recipient}, max_attempts=1)
        hostile = await runtime.client.enqueue("test.log", {"message": XSS})
        for n in range(20):
            await runtime.client.enqueue("test.noop", {"n": n})
        assert failing is not None and hostile is not None

        async def settled() -> bool:
            return (await state_of(runtime, failing.id) == "failed"
                    and await state_of(runtime, hostile.id) == "succeeded")

        await eventually(settled, timeout=60, what="the failing job to fail and the hostile one to run")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(STEP_TIMEOUT_MS)
        watched = Watched(page)

        # The overview: counts by state, the realtime graph refreshing, the history graphs.
        await page.goto(f"{base_url}/jobs")
        await expect(page.locator("h1")).to_have_text("Overview")
        await expect(page.locator('[data-count="failed"]')).not_to_have_text("0")
        await expect(page.locator('[data-count="servers_alive"]')).to_have_text("1")
        await expect(page.locator("#live-status")).to_have_text("live")
        await expect(page.locator("#realtime-chart .total-succeeded")).not_to_have_text("0")
        await expect(page.locator("#week-chart .total-succeeded")).not_to_have_text("0")
        await expect(page.locator("table").filter(has_text="test.until_fixed")).to_be_visible()  # lateness
        await page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

        # Find the failed job by its recipient, anywhere in the history.
        await page.get_by_role("searchbox", name="Search all jobs").fill(recipient)
        await page.get_by_role("searchbox", name="Search all jobs").press("Enter")
        rows = page.locator("table.jobs-table tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text(recipient)
        await expect(rows.first.locator(".state")).to_have_text("failed")
        await rows.first.get_by_role("link", name="test.until_fixed").click()

        # Its page: the traceback of the failed attempt, then requeue once the cause is fixed.
        await expect(page.locator("h1")).to_contain_text("test.until_fixed")
        await expect(page.locator("h1 .state")).to_have_text("failed")
        traceback = page.locator(".errors-panel pre.traceback").first
        await expect(traceback).to_be_visible()
        await expect(traceback).to_contain_text("Traceback (most recent call last)")
        await expect(traceback).to_contain_text(f"RuntimeError: switch {recipient} is broken")
        await expect(page.locator("#job-args")).to_contain_text(recipient)
        await page.screenshot(path=str(SCREENSHOTS / "job.png"), full_page=True)

        BROKEN.discard(recipient)
        await page.get_by_role("button", name="Requeue").click()
        await expect(page.locator(".notice")).to_have_text("Job requeued.")
        await expect(page.locator("h1 .state")).to_have_text("succeeded")  # the page follows the job live
        await expect(page.locator(".timeline li").last).to_contain_text("succeeded")
        await expect(page.locator(".timeline")).to_contain_text("requeued from the dashboard")

        # A job whose arguments carry markup shows it as text; no script runs.
        await page.goto(f"{base_url}/jobs/job/{hostile.id}")
        await expect(page.locator("#job-args")).to_contain_text(XSS)
        await expect(page.locator(".log-message").first).to_contain_text(XSS)
        await page.goto(f"{base_url}/jobs/list?q=alert(1)")
        await expect(page.locator("table.jobs-table")).to_contain_text(XSS)

        # Recurring jobs: pause one, trigger another and follow its run.
        await page.goto(f"{base_url}/jobs/recurring")
        paused_row = page.locator("#rec-cleanup-expired-events")
        await expect(paused_row).to_contain_text("active")
        await paused_row.get_by_role("button", name="Pause").click()
        await expect(page.locator(".notice")).to_have_text("Recurring job paused.")
        await expect(paused_row).to_contain_text("paused")
        await expect(paused_row.get_by_role("button", name="Resume")).to_be_visible()
        await expect(paused_row.locator(".next-run")).to_have_text("—")

        row = page.locator("#rec-warm-cache")
        await expect(row.locator(".last-run")).to_contain_text("never")
        await expect(row.locator(".next-run")).not_to_have_text("—")
        await row.get_by_role("button", name="Trigger now").click()
        await expect(page.locator(".notice")).to_have_text("Recurring job triggered.")
        await expect(row.locator(".last-run a")).to_be_visible()

        # Editing the schedule: a bad cron is explained beside its field and nothing is saved.
        await row.get_by_role("link", name="Edit").click()
        form = page.get_by_role("form", name="Edit warm-cache")
        await form.get_by_label("Cron").fill("75 4 * * *")
        await form.get_by_role("button", name="Save").click()
        await expect(form.locator(".field-error")).to_contain_text("75")
        await form.get_by_label("Cron").fill("30 5 * * 1-5")
        await form.get_by_role("button", name="Save").click()
        await expect(page.locator(".notice")).to_have_text("Schedule saved.")
        await expect(row.locator("code.cron")).to_have_text("30 5 * * 1-5")
        await page.screenshot(path=str(SCREENSHOTS / "recurring.png"), full_page=True)

        await row.locator(".last-run a").click()
        await expect(page.locator("h1")).to_contain_text("test.noop")
        await expect(page.locator("h1 .state")).to_have_text("succeeded")
        await expect(page.locator(".facts")).to_contain_text("warm-cache")

        await page.goto(f"{base_url}/jobs/list?state=failed")
        await expect(page.locator("table.jobs-table tbody tr").first).to_be_visible()
        await page.screenshot(path=str(SCREENSHOTS / "jobs.png"))
        await page.goto(f"{base_url}/jobs/queues")
        work_queue = page.locator("table.queues-table tr").filter(has_text="jobs.test")
        await expect(work_queue).to_be_visible()
        # The failed job's parked copy went with its requeue (issue 10); an undecodable message stays, with why.
        await expect(page.locator("#parking-lot")).not_to_contain_text(recipient)
        await runtime.broker.publish_dead(b"\xff not json", "undecodable message body: invalid start byte")
        await page.reload()
        await expect(page.locator("table").filter(has_text="Reason")).to_contain_text("undecodable message body")

        async def consumer_counted() -> bool:  # RabbitMQ refreshes its queue statistics every few seconds
            await page.reload()
            return await work_queue.locator("td").nth(4).inner_text() == "1"

        await eventually(consumer_counted, timeout=30, interval=1, what="the worker's consumer on the queues page")
        await page.screenshot(path=str(SCREENSHOTS / "queues.png"), full_page=True)

        assert watched.dialogs == [], f"a dialog fired: {watched.dialogs}"
        assert not [error for error in watched.errors if "Content Security Policy" in error], watched.errors
    finally:
        BROKEN.discard(recipient)
    assert await state_of(runtime, failing.id) == "succeeded"
    paused: Any = await runtime.pool.fetchval("SELECT enabled FROM recurring_jobs WHERE id = 'cleanup-expired-events'")
    assert paused is False


async def test_the_recurring_page_fits_a_laptop_window_with_long_time_zones(
    browser: Browser, base_url: str, runtime: Runtime
) -> None:
    await runtime.pool.execute(
        """INSERT INTO recurring_jobs (id, kind, args, cron, timezone)
           VALUES ('remind-buenos-aires', 'test.noop', '{}', '0 9 * * 1-5', 'America/Argentina/Buenos_Aires')""")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    for path in ("/jobs/recurring", "/jobs/recurring?edit=remind-buenos-aires"):
        await page.goto(f"{base_url}{path}")
        await expect(page.locator("#rec-remind-buenos-aires")).to_contain_text("Buenos_Aires")
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the window: the page scrolls sideways"
    # A window narrower than the table scrolls the table, not the page with its header.
    await page.set_viewport_size({"width": 900, "height": 800})
    await page.goto(f"{base_url}/jobs/recurring")
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await expect(page.get_by_role("button", name="Trigger now").first).to_be_visible()


async def test_the_job_list_fits_a_1024_px_window_with_long_kind_names(
    browser: Browser, base_url: str, runtime: Runtime
) -> None:
    await runtime.pool.execute(
        """INSERT INTO jobs (id, kind, args, queue, service, priority, state, max_attempts, last_error)
           VALUES (gen_random_uuid(), 'maintenance.cleanup_expired_events', '{}', 'low', 'maintenance', 1,
                   'failed', 3, 'boom'),
                  (gen_random_uuid(), 'email.send', '{"to": "wide@example.com", "subject": "a fairly long subject"}',
                   'default', 'email', 5, 'failed', 3, 'SmtpDeferred: 451 try again later')""")
    page = await browser.new_page(viewport={"width": 1024, "height": 800})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    for path in ("/jobs/list", "/jobs/list?state=failed"):
        await page.goto(f"{base_url}{path}")
        await expect(page.locator("table.jobs-table")).to_contain_text("cleanup_expired_events")
        right = await page.evaluate("document.querySelector('table.jobs-table').getBoundingClientRect().right")
        assert right <= 1024, f"{path}: the table ends at {right}px, past the window; its Changed column is cut off"


async def test_deleting_asks_first_and_a_declined_question_deletes_nothing(
    browser: Browser, base_url: str, runtime: Runtime
) -> None:
    job = await runtime.client.enqueue("test.noop", {"n": 1}, delay=3600)
    assert job is not None
    page = await browser.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    questions: list[str] = []
    answer = {"accept": False}

    async def reply(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if answer["accept"] else dialog.dismiss())

    page.on("dialog", reply)
    await page.goto(f"{base_url}/jobs/job/{job.id}")
    await page.get_by_role("button", name="Delete").click()
    await expect(page.locator("body")).to_contain_text("scheduled")
    assert questions == ["Delete this job?"]
    assert await job_admin.job_state(runtime.pool, job.id) == "scheduled"

    answer["accept"] = True
    await page.get_by_role("button", name="Delete").click()
    await expect(page.locator(".notice")).to_contain_text("Job deleted.")
    assert questions == ["Delete this job?", "Delete this job?"]
    assert await job_admin.job_state(runtime.pool, job.id) == "deleted"


class TwoGates(Args):
    first: str
    second: str


async def in_two_steps(ctx: JobContext, args: TwoGates) -> None:
    await ctx.progress(3, 10, "exporting attendees")
    await gate(args.first).wait()
    await ctx.progress(7, 10, "exporting attendees")
    await gate(args.second).wait()
    await ctx.progress(10, 10, "done")


async def test_a_running_jobs_progress_bar_moves_without_a_reload(
    browser: Browser, base_url: str, settings: Settings, start_worker: StartWorker
) -> None:
    kind = JobKind("test.two_steps", TwoGates, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=60)
    registry = test_registry(kind)
    await start_worker(registry=registry, handlers={**TEST_HANDLERS, kind.name: in_two_steps},
                       progress_interval_ms=0)
    first, second = f"first-{uuid.uuid4().hex[:6]}", f"second-{uuid.uuid4().hex[:6]}"
    async with open_runtime(settings, registry) as runtime:
        job = await runtime.client.enqueue(kind.name, {"first": first, "second": second})
        assert job is not None

        async def reported() -> bool:
            return bool(await runtime.pool.fetchval("SELECT progress_done FROM jobs WHERE id = $1", job.id))

        await eventually(reported, what="the first progress report")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    await page.goto(f"{base_url}/jobs/job/{job.id}")
    await expect(page.locator("#progress-text")).to_have_text("3 of 10 (30 %): exporting attendees")
    marker = await page.evaluate("window.__notReloaded = true")
    assert marker is True
    gate(first).set()
    await expect(page.locator("#progress-text")).to_have_text("7 of 10 (70 %): exporting attendees")
    assert await page.evaluate("window.__notReloaded === true")  # moved live, not by reloading the page
    assert await page.evaluate("document.getElementById('progress-bar').value") == 7
    await page.screenshot(path=str(SCREENSHOTS / "progress.png"), full_page=True)
    gate(second).set()
    await expect(page.locator("h1")).to_contain_text("succeeded")  # the state changed: the page reloaded
    await expect(page.locator("#progress-text")).to_have_text("10 of 10 (100 %): done")
