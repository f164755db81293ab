"""The email worker against real Postgres, RabbitMQ and an aiosmtpd sink."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.email_worker.handlers import build_handlers
from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.jobs import JobState
from shared.kinds import EMAIL_SERVICE, platform_registry
from shared.registry import InvalidJobArguments
from shared.runtime import Runtime, open_runtime
from tests.conftest import StartWorker
from tests.support.domain_rows import insert_event, insert_participants
from tests.support.environment import TestEnvironment
from tests.support.scheduler import StartScheduler, start_scheduler_fixture  # noqa: F401  (fixture)
from tests.support.smtp import SmtpSink
from tests.support.waiting import eventually


@pytest.fixture
def overrides(sink: SmtpSink) -> dict[str, Any]:
    return {"smtp_port": sink.port, "retry_delays": (1, 1), "retry_attempts": 3, "smtp_timeout_seconds": 10}


@pytest.fixture
async def platform(env: TestEnvironment, overrides: dict[str, Any]) -> AsyncIterator[Runtime]:
    async with open_runtime(env.settings(**overrides), platform_registry()) as runtime:
        yield runtime


@pytest.fixture
async def email_worker(env: TestEnvironment, start_worker: StartWorker, overrides: dict[str, Any]) -> None:
    await start_worker(registry=platform_registry(), handlers=build_handlers(env.settings(**overrides)),
                       service=EMAIL_SERVICE, **overrides)


async def finished(pool: asyncpg.Pool, job_id: uuid.UUID, timeout: float = 60) -> asyncpg.Record:
    async def final() -> asyncpg.Record | None:
        row = await job_queries.get_job(pool, job_id)
        return row if row is not None and row["state"] in ("succeeded", "failed") else None

    return await eventually(final, timeout=timeout, what=f"job {job_id} to finish")


async def email_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM emails ORDER BY recipient")


@pytest.mark.usefixtures("email_worker")
async def test_welcome_email_reaches_the_sink_with_a_sent_audit_row(platform: Runtime, sink: SmtpSink) -> None:
    job = await platform.client.enqueue("email.welcome", {"email": "ada@example.com", "name": "Ada <Lovelace>"})
    assert job is not None

    [received] = await sink.wait_for(1, recipient="ada@example.com")
    assert received.message_id == f"<{job.id}@eventjobs>"
    assert received.subject == "Welcome to eventjobs, Ada <Lovelace>"
    assert received.message.get_content_type() == "multipart/alternative"
    assert "Hello Ada <Lovelace>," in received.body("plain")
    assert "Hello Ada &lt;Lovelace&gt;," in received.body("html")

    assert (await finished(platform.pool, job.id))["state"] == "succeeded"
    [row] = await email_rows(platform.pool)
    assert (row["status"], row["job_id"], row["recipient"], row["template"], row["attempts"]) == (
        "sent", job.id, "ada@example.com", "welcome", 1)
    assert row["message_id"] == received.message_id
    assert row["smtp_code"] == 250
    assert row["smtp_reply"] == "2.0.0 OK queued as 1"
    assert row["sent_at"] is not None


@pytest.mark.usefixtures("email_worker")
async def test_a_deferring_server_gets_the_message_on_attempt_three(platform: Runtime, sink: SmtpSink) -> None:
    sink.defer(2)
    job = await platform.client.enqueue(
        "email.send", {"to": "bob@example.com", "subject": "Hello", "context": {"body": "twice deferred"}}
    )
    assert job is not None

    row = await finished(platform.pool, job.id)
    assert (row["state"], row["attempt"]) == ("succeeded", 3)
    assert sink.deferred == 2
    assert [item.message_id for item in sink.to("bob@example.com")] == [f"<{job.id}@eventjobs>"]
    states = [state["state"] for state in await job_queries.job_history(platform.pool, job.id)]
    assert states == ["enqueued", "processing", "retrying", "processing", "retrying", "processing", "succeeded"]
    [email] = await email_rows(platform.pool)
    assert (email["status"], email["attempts"], email["smtp_code"]) == ("sent", 3, 250)


@pytest.mark.usefixtures("email_worker")
async def test_a_rejected_recipient_fails_at_once_with_the_reply_recorded(platform: Runtime, sink: SmtpSink) -> None:
    sink.reject("nobody@example.com", "550 5.1.1 <nobody@example.com>: no such user")
    job = await platform.client.enqueue("email.send", {"to": "nobody@example.com", "subject": "Hello",
                                                       "context": {"body": "x"}})
    assert job is not None

    row = await finished(platform.pool, job.id)
    assert (row["state"], row["attempt"]) == ("failed", 1)
    assert "rejected" in row["last_error"] and "550" in row["last_error"]
    [email] = await email_rows(platform.pool)
    assert (email["status"], email["attempts"], email["smtp_code"]) == ("failed", 1, 550)
    assert email["smtp_reply"] == "5.1.1 <nobody@example.com>: no such user"
    assert email["sent_at"] is None
    assert sink.messages == []


@pytest.mark.usefixtures("email_worker")
async def test_reminder_fans_out_once_per_participant_and_a_rerun_sends_nothing_new(
    platform: Runtime, sink: SmtpSink, start_scheduler: StartScheduler
) -> None:
    await start_scheduler()  # publishes the batch callback once it is due
    event_id = await insert_event(platform.pool, title="Tea\r\nBcc: all@evil.example",
                                  starts_at=datetime.now(UTC) + timedelta(days=1))
    participants = await insert_participants(platform.pool, event_id, 40)
    bad_address = participants[7][1]
    sink.reject(bad_address)

    first = await platform.client.enqueue("event.reminder", {"event_id": str(event_id)})
    assert first is not None
    await sink.wait_for(39, timeout=90)
    fanned = await finished(platform.pool, first.id)
    assert fanned["result"] == {"participants": 40, "created": 40}
    assert (fanned["progress_done"], fanned["progress_total"], fanned["progress_message"]) == \
        (40, 40, "participants enqueued")  # the fan-out's progress

    async def all_sends_finished() -> list[asyncpg.Record]:
        rows = await platform.pool.fetch("SELECT * FROM jobs WHERE kind = 'email.send'")
        done = len(rows) == 40 and all(row["state"] in ("succeeded", "failed") for row in rows)
        return rows if done else []

    sends = await eventually(all_sends_finished, timeout=90, what="40 email.send jobs to finish")
    assert {row["parent_id"] for row in sends} == {first.id}
    assert {row["state"] for row in sends if row["args"]["to"] == bad_address} == {"failed"}
    assert sum(row["state"] == "succeeded" for row in sends) == 39
    # The sends were one batch; its callback reports the outcome once they have all finished.
    batch = await platform.pool.fetchrow("SELECT * FROM batches WHERE id = $1",
                                         uuid.uuid5(uuid.NAMESPACE_URL, f"eventjobs:fan-out:{first.id}"))
    assert (batch["total"], batch["succeeded"], batch["failed"]) == (40, 39, 1)
    report = await finished(platform.pool, batch["callback_id"])
    assert report["result"] == {"event_id": str(event_id), "reminder": "event.reminder", "sent": 39, "of": 40,
                                "failed": 1}
    statuses = {row["recipient"]: row["status"] for row in await email_rows(platform.pool)}
    assert statuses == {address: "failed" if address == bad_address else "sent" for _, address in participants}
    # The title's line break never reached a header: the subject is one line.
    assert {item.subject for item in sink.messages} == {"Reminder: Tea Bcc: all@evil.example"}
    assert all(item.recipients == (item.message["To"],) for item in sink.messages)

    rerun = await platform.client.enqueue("event.reminder", {"event_id": str(event_id)})
    assert rerun is not None
    assert (await finished(platform.pool, rerun.id))["result"] == {"participants": 40, "existing": 40}
    assert await platform.pool.fetchval("SELECT count(*) FROM jobs WHERE kind = 'email.send'") == 40

    # Even a sent message's own job run again by hand finds its audit row `sent` and does not resend.
    sent_job = next(row["id"] for row in sends if row["state"] == "succeeded")
    requeued = await job_admin.requeue(platform.pool, sent_job, "test: run it again")
    assert requeued is not None
    await platform.client.publish([requeued])
    assert (await finished(platform.pool, sent_job))["result"]["status"] == "already sent"
    assert len(sink.messages) == 39
    assert max(sink.message_id_counts().values()) == 1


@pytest.mark.usefixtures("email_worker")
async def test_cancelled_event_gets_no_email_and_says_why(platform: Runtime, sink: SmtpSink) -> None:
    now = datetime.now(UTC)
    event_id = await insert_event(platform.pool, starts_at=now + timedelta(days=1), cancelled_at=now)
    [(participant_id, address)] = await insert_participants(platform.pool, event_id, 1)

    jobs = [
        await platform.client.enqueue("event.reminder", {"event_id": str(event_id)}),
        await platform.client.enqueue("event.starting_soon", {"event_id": str(event_id)}),
        await platform.client.enqueue("email.event_confirmation",
                                      {"event_id": str(event_id), "participant_id": str(participant_id)}),
        await platform.client.enqueue("email.send", {
            "to": address, "subject": "Reminder", "template": "event_reminder", "event_id": str(event_id),
            "participant_id": str(participant_id), "context": {}}),
    ]
    for job in jobs:
        assert job is not None
        row = await finished(platform.pool, job.id)
        assert row["state"] == "succeeded"
        assert row["result"]["skipped"].startswith("the event was cancelled")

        async def logged(job_id: uuid.UUID = job.id) -> list[str]:
            return [line["message"] for line in await job_queries.job_logs(platform.pool, job_id)]

        lines = await eventually(logged, what="the skip reason in job_logs")
        assert "the event was cancelled" in lines[0]
    assert await platform.pool.fetchval("SELECT count(*) FROM jobs WHERE kind = 'email.send'") == 1
    assert await email_rows(platform.pool) == []
    assert sink.messages == []


@pytest.mark.usefixtures("email_worker")
async def test_confirmation_is_sent_once_per_participant(platform: Runtime, sink: SmtpSink) -> None:
    event_id = await insert_event(platform.pool, title="Jazz & <Blues>",
                                  starts_at=datetime(2031, 5, 17, 19, 30, tzinfo=UTC))
    [(participant_id, address)] = await insert_participants(platform.pool, event_id, 1)
    args = {"event_id": str(event_id), "participant_id": str(participant_id)}

    first = await platform.client.enqueue("email.event_confirmation", args)
    assert first is not None
    [received] = await sink.wait_for(1, recipient=address)
    assert received.subject == "You are registered: Jazz & <Blues>"
    assert "Saturday 17 May 2031, 19:30 UTC" in received.body("plain")
    assert "Jazz &amp; &lt;Blues&gt;" in received.body("html")
    assert (await finished(platform.pool, first.id))["result"]["status"] == "sent"

    second = await platform.client.enqueue("email.event_confirmation", args)
    assert second is not None
    assert (await finished(platform.pool, second.id))["result"]["status"] == "already sent"
    assert len(sink.messages) == 1
    [row] = await email_rows(platform.pool)
    assert row["idempotency_key"] == f"email.event_confirmation:{event_id}:{participant_id}"


@pytest.mark.usefixtures("email_worker")
async def test_header_injection_that_slipped_past_the_api_fails_permanently(
    platform: Runtime, sink: SmtpSink
) -> None:
    # Written straight to the table, as a caller bypassing validation would: the worker still refuses it.
    row = await job_queries.insert_job(platform.pool, job_queries.NewJob(
        id=uuid.uuid4(), kind="email.send", args={"to": "eve@example.com", "subject": "Hi\r\nBcc: all@example.com"},
        queue="default", service=EMAIL_SERVICE, priority=5, state=JobState.ENQUEUED, max_attempts=3,
        run_at=datetime.now(UTC),
    ))
    assert row is not None
    await platform.client.publish([row])

    job = await finished(platform.pool, row["id"])
    assert (job["state"], job["attempt"]) == ("failed", 1)
    assert "subject" in job["last_error"]
    assert sink.messages == []


@pytest.mark.usefixtures("email_worker")
async def test_a_subject_with_a_unicode_line_separator_fails_at_once_with_the_reason(
    platform: Runtime, sink: SmtpSink
) -> None:
    """U+0085 (NEL) is no CR/LF, but the email package splits lines on it: a plain ValueError used to be retried."""
    with pytest.raises(InvalidJobArguments, match="subject"):  # the front door refuses it
        await platform.client.enqueue("email.send", {"to": "eve@example.com", "subject": "Hi\x85there"})
    # Written straight to the table, as a caller bypassing validation would.
    row = await job_queries.insert_job(platform.pool, job_queries.NewJob(
        id=uuid.uuid4(), kind="email.send", args={"to": "eve@example.com", "subject": "Hi\x85there"},
        queue="default", service=EMAIL_SERVICE, priority=5, state=JobState.ENQUEUED, max_attempts=3,
        run_at=datetime.now(UTC),
    ))
    assert row is not None
    await platform.client.publish([row])
    # A title stored before the api refused control characters: the worker is where it surfaces.
    event_id = await insert_event(platform.pool, title="Party\x01Bcc: all@example.com",
                                  starts_at=datetime.now(UTC) + timedelta(days=2))
    [(participant_id, _)] = await insert_participants(platform.pool, event_id, 1)
    confirmation = await platform.client.enqueue(
        "email.event_confirmation", {"event_id": str(event_id), "participant_id": str(participant_id)})
    assert confirmation is not None

    send = await finished(platform.pool, row["id"])
    assert (send["state"], send["attempt"]) == ("failed", 1)
    assert send["last_error"].endswith("InvalidJobArguments: arguments do not fit job kind 'email.send': subject")
    assert send["state_reason"] == "permanent error"
    job = await finished(platform.pool, confirmation.id)
    assert (job["state"], job["attempt"]) == ("failed", 1)
    assert "PermanentError" in job["last_error"] and "U+0001" in job["last_error"]
    [email] = await email_rows(platform.pool)
    assert email["status"] == "failed"
    assert sink.messages == []
