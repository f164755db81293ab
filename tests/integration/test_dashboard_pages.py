"""The /jobs dashboard's pages and forms over real HTTP, against real Postgres and RabbitMQ."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.jobs import JobState
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.environment import TestEnvironment
from tests.support.kinds import BROKEN, test_registry
from tests.support.live_api import browser_session, csrf_from, running_api
from tests.support.waiting import eventually


@pytest.fixture
async def base_url(env: TestEnvironment) -> AsyncIterator[str]:
    async with running_api(env.settings(), test_registry()) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with browser_session(Origin=base_url) as session:
        yield session


async def page(session: aiohttp.ClientSession, url: str, status: int = 200) -> str:
    async with session.get(url, allow_redirects=False) as response:
        text = await response.text()
        assert response.status == status, f"GET {url}: {response.status}\n{text[:2000]}"
        return text


async def post_form(
    session: aiohttp.ClientSession, url: str, form: dict[str, Any], csrf_page: str
) -> aiohttp.ClientResponse:
    token = csrf_from(await page(session, csrf_page))
    async with session.post(url, data={**form, "csrf_token": token}, allow_redirects=False) as response:
        await response.read()
        return response


async def insert_job(runtime: Runtime, kind: str, args: dict[str, Any], state: JobState = JobState.FAILED,
                     **fields: Any) -> uuid.UUID:
    """A job row as it would be after some history (the dashboard shows whatever the table holds)."""
    job_id = uuid.uuid4()
    await job_queries.insert_job(runtime.pool, job_queries.NewJob(
        id=job_id, kind=kind, args=args, queue="default", service="test", priority=5, state=state,
        max_attempts=3, run_at=datetime.now(UTC) + fields.pop("delay", timedelta(0)), **fields,
    ))
    return job_id


async def test_arguments_with_secret_names_are_redacted_and_markup_is_escaped(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    job_id = await insert_job(runtime, "test.noop", {
        "to": "<b>bold</b>@example.org", "smtp_password": "hunter2-secret-value",
        "nested": {"api_token": "tok-123-value", "note": "<script>alert(1)</script>"},
    })
    html = await page(browser, f"{base_url}/jobs/job/{job_id}")
    assert "hunter2-secret-value" not in html and "tok-123-value" not in html
    assert "redacted" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    listing = await page(browser, f"{base_url}/jobs/list?q=bold")
    assert str(job_id)[:8] in listing and "hunter2-secret-value" not in listing and "<b>bold</b>" not in listing


async def test_the_job_page_shows_timeline_tracebacks_logs_and_children(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    switch = f"sw-{uuid.uuid4().hex[:6]}"
    BROKEN.add(switch)
    try:
        failing = await runtime.client.enqueue("test.until_fixed", {"switch": switch}, max_attempts=1)
        logged = await runtime.client.enqueue("test.log", {"message": "line <from> handler"}, parent_id=failing.id)
        assert failing is not None and logged is not None

        async def states() -> bool:
            return (await job_admin.job_state(runtime.pool, failing.id) == "failed"
                    and await job_admin.job_state(runtime.pool, logged.id) == "succeeded"
                    and bool(await job_queries.job_logs(runtime.pool, logged.id)))  # logs are flushed in batches

        await eventually(states, what="one job failed, one succeeded and logged")
    finally:
        BROKEN.discard(switch)

    html = await page(browser, f"{base_url}/jobs/job/{failing.id}")
    assert f"switch {switch} is broken" in html
    assert "Traceback (most recent call last)" in html
    assert html.count('class="state state-') >= 3  # the timeline: enqueued, processing, failed
    assert str(logged.id) in html  # listed as a child

    child = await page(browser, f"{base_url}/jobs/job/{logged.id}")
    assert "handler says line &lt;from&gt; handler" in child
    assert f'href="/jobs/job/{failing.id}"' in child  # its parent


async def test_search_filters_and_pages_over_the_history(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    needle = f"dana.{uuid.uuid4().hex[:6]}@example.org"
    wanted = await insert_job(runtime, "test.until_fixed", {"switch": needle})
    for n in range(55):
        await insert_job(runtime, "test.noop", {"n": n})

    found = await page(browser, f"{base_url}/jobs/list?q={needle}")
    assert str(wanted) in found and found.count('class="row-') == 1

    failed = await page(browser, f"{base_url}/jobs/list?state=failed&kind=test.noop")
    assert failed.count('class="row-failed"') == 50 and "Older →" in failed
    older = failed.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = await page(browser, base_url + older)
    assert second.count('class="row-failed"') == 5 and "Older →" not in second

    bad = await page(browser, f"{base_url}/jobs/list?state=failed&cursor=not-a-cursor", status=422)
    assert "not valid any more" in bad
    bad = await page(browser, f"{base_url}/jobs/list?since=yesterday", status=422)
    assert "not a date and time" in bad


async def test_bulk_requeue_of_matching_failed_jobs(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    ids = [await insert_job(runtime, "test.noop", {"n": n}) for n in range(3)]
    other = await insert_job(runtime, "test.log", {"message": "stays failed"})
    response = await post_form(browser, f"{base_url}/jobs/bulk",
                               {"do": "requeue-matching", "state": "failed", "kind": "test.noop"},
                               f"{base_url}/jobs/list?state=failed")
    assert response.status == 303
    assert "done=bulk" in response.headers["Location"] and "n=3" in response.headers["Location"]
    for job_id in ids:
        assert await job_admin.job_state(runtime.pool, job_id) == "enqueued"
    assert await job_admin.job_state(runtime.pool, other) == "failed"

    response = await post_form(browser, f"{base_url}/jobs/bulk",
                               {"do": "delete-selected", "state": "failed", "id": str(other)},
                               f"{base_url}/jobs/list?state=failed")
    assert response.status == 303
    assert await job_admin.job_state(runtime.pool, other) == "deleted"


async def test_a_scheduled_job_is_enqueued_now_from_its_page(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    job = await runtime.client.enqueue("test.noop", {}, delay=3600)
    assert job is not None and job.state is JobState.SCHEDULED
    html = await page(browser, f"{base_url}/jobs/job/{job.id}")
    assert "Enqueue now" in html
    response = await post_form(browser, f"{base_url}/jobs/job/{job.id}/enqueue", {}, f"{base_url}/jobs/job/{job.id}")
    assert response.status == 303
    assert await job_admin.job_state(runtime.pool, job.id) == "enqueued"
    assert "Scheduled job enqueued now." in await page(browser, base_url + response.headers["Location"])


async def test_the_scheduled_list_shows_run_times_soonest_first_and_enqueues_in_bulk(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    later = await runtime.client.enqueue("test.noop", {"n": 1}, delay=7200)
    soon = await runtime.client.enqueue("test.noop", {"n": 2}, delay=600)
    soonest = await runtime.client.enqueue("test.noop", {"n": 3}, delay=60)
    assert later and soon and soonest
    url = f"{base_url}/jobs/list?state=scheduled"
    html = await page(browser, url)

    assert "Runs at" in html and "Changed" not in html.split("<thead>")[1].split("</thead>")[0]
    assert 'class="select-all" data-select="jobs"' in html
    order = [html.index(str(job.id)) for job in (soonest, soon, later)]
    assert order == sorted(order), "soonest first"
    assert "in 2 h" in html and "in 10 min" in html
    run_at = await runtime.pool.fetchval("SELECT run_at FROM jobs WHERE id = $1", later.id)
    assert f"{run_at:%Y-%m-%d %H:%M:%S} UTC" in html

    response = await post_form(browser, f"{base_url}/jobs/bulk",
                               {"do": "enqueue-selected", "state": "scheduled", "id": [str(soon.id), str(later.id)]},
                               url)
    assert response.status == 303 and "n=2" in response.headers["Location"]
    states = {job.id: await job_admin.job_state(runtime.pool, job.id) for job in (later, soon, soonest)}
    assert states == {later.id: "enqueued", soon.id: "enqueued", soonest.id: "scheduled"}
    response = await post_form(browser, f"{base_url}/jobs/bulk", {"do": "enqueue-matching", "state": "scheduled"}, url)
    assert response.status == 303 and "n=1" in response.headers["Location"]
    assert await job_admin.job_state(runtime.pool, soonest.id) == "enqueued"


async def test_recurring_edit_shows_validation_errors_and_saves_good_values(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    url = f"{base_url}/jobs/recurring"
    edit_page = f"{url}?edit=generate-daily-report"
    response = await post_form(browser, f"{url}/generate-daily-report/edit",
                               {"cron": "61 * * * *", "timezone": "UTC"}, edit_page)
    assert response.status == 422
    html = await page(browser, edit_page)  # the stored value is unchanged
    assert "0 6 * * *" in html

    async def refused(cron: str, timezone: str) -> str:
        token = csrf_from(await page(browser, edit_page))
        async with browser.post(f"{url}/generate-daily-report/edit",
                                data={"cron": cron, "timezone": timezone, "csrf_token": token}) as bad:
            assert bad.status == 422
            return await bad.text()

    text = await refused("0 7 * * *", "Mars/Olympus")
    assert "Mars/Olympus" in text and "unknown IANA time zone" in text
    # Both fields at once: a bad zone does not hide a bad cron expression.
    text = await refused("99 7 * * *", "Mars/Olympus")
    assert "unknown IANA time zone" in text and "99" in text
    assert text.count('class="field-error" role="alert"') == 2, text

    response = await post_form(browser, f"{url}/generate-daily-report/edit",
                               {"cron": "30 7 * * 1-5", "timezone": "Europe/Paris"}, edit_page)
    assert response.status == 303
    row = await runtime.pool.fetchrow("SELECT cron, timezone FROM recurring_jobs WHERE id = 'generate-daily-report'")
    assert (row["cron"], row["timezone"]) == ("30 7 * * 1-5", "Europe/Paris")
    shown = await page(browser, url)
    assert "30 7 * * 1-5" in shown and "Europe/Paris" in shown


async def test_overview_realtime_queues_and_servers(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await runtime.client.enqueue("test.noop", {"n": 1})
    assert job is not None

    async def succeeded() -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == "succeeded"

    await eventually(succeeded, what="the job to succeed")
    await runtime.pool.execute(
        """INSERT INTO servers (id, service, host, pid, queues, concurrency, started_at, last_heartbeat)
           VALUES ('email:gone-host:1:abc', 'email', 'gone-host', 1, '{jobs.email}', 4,
                   now() - interval '1 hour', now() - interval '10 minutes')""")

    overview = await page(browser, f"{base_url}/jobs")
    assert 'data-count="succeeded">1<' in overview
    async with browser.get(f"{base_url}/jobs/realtime.json") as response:
        body = await response.json()
    assert len(body["series"]) == 60 and sum(point["succeeded"] for point in body["series"]) >= 1
    assert body["counts"]["succeeded"] == 1 and body["servers_alive"] == 1

    servers = await page(browser, f"{base_url}/jobs/servers")
    assert "gone-host" in servers and 'class="pill dead"' in servers and 'class="pill on"' in servers

    queues = await page(browser, f"{base_url}/jobs/queues")
    assert "jobs.test" in queues and "jobs.dead" in queues and "http://127.0.0.1:15672/" in queues


async def test_the_job_page_lists_the_emails_the_job_sent(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    job_id = await insert_job(runtime, "email.send", {"to": "fay@example.org", "subject": "Hi"},
                              state=JobState.SUCCEEDED)
    await runtime.pool.execute(
        """INSERT INTO emails (id, job_id, idempotency_key, recipient, subject, template, message_id, status,
                               smtp_code, smtp_reply, attempts, sent_at)
           VALUES ($1, $2, $3, 'fay@example.org', 'Hi <there>', 'plain', $4, 'sent', 250,
                   '2.0.0 Ok: queued as 4XyZ', 1, now())""",
        uuid.uuid4(), job_id, f"job:{job_id}", f"<{job_id}@eventjobs.local>")
    html = await page(browser, f"{base_url}/jobs/job/{job_id}")
    assert f"&lt;{job_id}@eventjobs.local&gt;" in html  # the Message-ID, escaped
    assert "2.0.0 Ok: queued as 4XyZ" in html and "<b>250</b>" in html
    assert "Hi &lt;there&gt;" in html


async def test_an_action_the_state_forbids_and_an_unknown_job_are_explained_on_a_page(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    job_id = await insert_job(runtime, "test.noop", {}, state=JobState.PROCESSING)
    response = await post_form(browser, f"{base_url}/jobs/job/{job_id}/requeue", {}, f"{base_url}/jobs/job/{job_id}")
    assert response.status == 409
    assert await job_admin.job_state(runtime.pool, job_id) == "processing"
    html = await page(browser, f"{base_url}/jobs/job/{uuid.uuid4()}", status=404)
    assert "Not found" in html and "text/html" in (await browser.get(f"{base_url}/jobs/job/nope")).content_type


async def test_the_queues_page_purges_selected_and_all_parked_messages(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    for n in range(3):
        await runtime.broker.publish_dead(f"poison {n}".encode(), f"undecodable {n}")
    url = f"{base_url}/jobs/queues"

    async def three_shown() -> str | None:
        html = await page(browser, url)
        return html if html.count('form="purge-form"') == 3 else None

    html = await eventually(three_shown, what="three parked messages with their boxes on the Queues page")
    assert "a copy goes when its job is requeued, deleted or succeeds" in html
    assert 'data-confirm="Empty the whole parking lot?' in html
    first_id = re.findall(r'name="id" value="([0-9a-f]+)" form="purge-form"', html)[0]

    response = await post_form(browser, f"{url}/purge", {"do": "selected", "id": first_id}, url)
    assert response.status == 303
    assert "Removed from the parking lot; no job was changed. (1 message)" in await page(
        browser, base_url + response.headers["Location"])
    response = await post_form(browser, f"{url}/purge", {"do": "all"}, url)
    assert response.status == 303 and "n=2" in response.headers["Location"]
    assert "The parking lot is empty." in await page(browser, url)


async def test_the_job_page_counts_attempts_across_requeues_and_shows_logs_in_time_order(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await runtime.client.enqueue("test.permanent", {})
    assert job is not None

    async def failed() -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == "failed"

    await eventually(failed, what="the first run to fail")
    html = await page(browser, f"{base_url}/jobs/job/{job.id}")
    response = await post_form(browser, f"{base_url}/jobs/job/{job.id}/requeue", {}, f"{base_url}/jobs/job/{job.id}")
    assert response.status == 303

    async def failed_again() -> bool:
        count = await runtime.pool.fetchval(
            "SELECT count(*) FROM job_states WHERE job_id = $1 AND state = 'failed'", job.id)
        return bool(count == 2)

    await eventually(failed_again, what="the requeued run to fail")
    # Lines written in batches carry the time they were logged: ids are not in time order.
    now = datetime.now(UTC)
    await runtime.pool.executemany(
        "INSERT INTO job_logs (job_id, level, message, created_at) VALUES ($1, 'INFO', $2, $3)",
        [(job.id, "second line", now), (job.id, "first line", now - timedelta(seconds=5))])

    html = await page(browser, f"{base_url}/jobs/job/{job.id}")
    assert html.count('<span class="attempt-no">attempt 2</span>') == 1, html
    assert html.count('<span class="attempt-no">attempt 1</span>') == 1
    assert "(1 since the last requeue)" in html
    assert html.index("first line") < html.index("second line")
    assert 'data-live="yes"' in html  # just failed: its last lines may still arrive
    async with browser.get(f"{base_url}/jobs/job/{job.id}/state.json") as state:
        body = await state.json()
    assert (body["state"], body["logs"], body["live"]) == ("failed", 2, True)


async def test_small_truths_failed_zero_not_red_no_concurrency_for_services_without_jobs_docs_favicon(
    browser: aiohttp.ClientSession, base_url: str, runtime: Runtime
) -> None:
    await runtime.pool.execute(
        """INSERT INTO servers (id, service, host, pid, queues, concurrency, started_at, last_heartbeat)
           VALUES ('scheduler:here:2:abc', 'scheduler', 'here', 2, '{}', 0, now(), now())""")
    overview = await page(browser, f"{base_url}/jobs")
    assert 'class="card-value zero" data-count="failed">0<' in overview
    listing = await page(browser, f"{base_url}/jobs/list")
    assert '<span class="count zero">0</span>' in listing
    servers = await page(browser, f"{base_url}/jobs/servers")
    assert 'title="runs no jobs">—</span>' in servers
    docs = await page(browser, f"{base_url}/api/docs")
    assert 'rel="icon" href="/jobs/static/favicon.svg"' in docs
