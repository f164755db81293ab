"""kill -9 the email worker at 20 % of a 1,000-participant reminder fan-out, three times: everybody gets the
reminder, no two copies of one email are ever in an SMTP conversation at the same moment (the send lease),
every copy carries the same Message-ID, and the duplicates, printed, are bounded by the sends in flight at
the kill. Also measured: the window between the server's 250 and the `sent` commit, the only moment a
kill can still cause a duplicate."""

from __future__ import annotations

import itertools
import statistics
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.domain_rows import insert_participants
from tests.support.environment import TestEnvironment
from tests.support.services import RunningServices, running_services
from tests.support.smtp import Received, SmtpSink
from tests.support.waiting import eventually

PARTICIPANTS = 1000
CONCURRENCY = 10  # = prefetch: at most this many sends are in flight when the worker dies
RUNS = 3
LEASE_SECONDS = 8  # short, so the redelivered sends of the dead worker take over soon


@pytest.fixture
async def services(env: TestEnvironment, sink: SmtpSink) -> AsyncIterator[RunningServices]:
    async with running_services(env, sink.port, retry_delays="1,1", worker_concurrency=CONCURRENCY,
                                worker_prefetch=CONCURRENCY, email_send_lease_seconds=LEASE_SECONDS,
                                names=("api", "scheduler", "email_worker")) as running:
        yield running


@pytest.fixture
async def db(env: TestEnvironment) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(env.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        assert response.status == status, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def reminders(sink: SmtpSink, title: str) -> list[Received]:
    return [item for item in sink.messages if item.subject == f"Reminder: {title}"]


def overlapping_copies(copies: list[Received]) -> int:
    """Pairs of copies of one Message-ID whose conversations (MAIL FROM .. 250) overlapped in time."""
    by_id: dict[str, list[Received]] = defaultdict(list)
    for item in copies:
        by_id[item.message_id].append(item)
    overlaps = 0
    for same in by_id.values():
        same.sort(key=lambda item: item.started)
        overlaps += sum(1 for first, second in itertools.pairwise(same) if second.started < first.accepted)
    return overlaps


async def one_run(run: int, services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession,
                  db: asyncpg.Pool) -> int:
    base = services.base_url
    title = f"Crash course {run}"
    event = await post(http, f"{base}/api/events", {
        "title": title, "starts_at": (datetime.now(UTC) + timedelta(days=3)).isoformat()}, 201)
    event_id = uuid.UUID(event["id"])
    participants = dict(await insert_participants(db, event_id, PARTICIPANTS, domain=f"run{run}.example.com"))
    reminder = await post(http, f"{base}/api/jobs", {"kind": "event.reminder", "args": {"event_id": event["id"]}},
                          202)

    async def a_fifth_delivered() -> bool:
        return len(reminders(sink, title)) >= PARTICIPANTS // 5

    await eventually(a_fifth_delivered, timeout=120, interval=0.01, what="20 % of the reminders in the sink")
    await services.kill("email_worker")
    delivered_before_kill = len(reminders(sink, title))
    in_flight = await db.fetchval(
        "SELECT count(*) FROM emails WHERE event_id = $1 AND status = 'sending'", event_id)
    assert delivered_before_kill < PARTICIPANTS, "the kill came too late to interrupt anything"
    await services.start("email_worker")

    async def everyone_sent() -> bool:
        sent: int = await db.fetchval(
            "SELECT count(*) FROM emails WHERE event_id = $1 AND template = 'event_reminder' AND status = 'sent'",
            event_id)
        return sent == PARTICIPANTS

    await eventually(everyone_sent, timeout=300, interval=0.5, what="one `sent` reminder row per participant")
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(reminder["id"])) == "succeeded"
    await sink.wait_for(len(sink.messages))  # the sink has recorded what the rows say was accepted

    copies = reminders(sink, title)
    assert {recipient for item in copies for recipient in item.recipients} == set(participants.values())
    rows = await db.fetch("SELECT recipient, message_id, sent_at FROM emails WHERE event_id = $1", event_id)
    message_ids = {row["recipient"]: row["message_id"] for row in rows}
    assert all(item.message_id == message_ids[item.recipients[0]] for item in copies), "one Message-ID per email"
    assert overlapping_copies(copies) == 0, "two copies of one email were being sent at the same moment"
    duplicates = len(copies) - len({item.message_id for item in copies})
    # 250 -> commit, for the copy whose run committed `sent` (the last one of each Message-ID).
    last_accepted: dict[str, float] = {}
    for item in copies:
        last_accepted[item.message_id] = max(item.accepted, last_accepted.get(item.message_id, 0.0))
    window = sorted(row["sent_at"].timestamp() - last_accepted[row["message_id"]] for row in rows)
    print(f"run {run}: killed at {delivered_before_kill}/{PARTICIPANTS} delivered, {in_flight} sends under lease; "
          f"{len(copies)} delivered, {duplicates} duplicates; 250 -> `sent` commit "
          f"p50 {statistics.median(window) * 1000:.1f} ms, max {window[-1] * 1000:.1f} ms", file=sys.stderr)
    assert duplicates <= CONCURRENCY
    return duplicates


async def test_killing_the_email_worker_at_20_percent_of_a_fan_out_mails_everyone_never_in_parallel(
    services: RunningServices, sink: SmtpSink, http: aiohttp.ClientSession, db: asyncpg.Pool
) -> None:
    duplicates = [await one_run(run, services, sink, http, db) for run in range(RUNS)]
    print(f"duplicates per run: {duplicates} (bound: {CONCURRENCY} sends in flight)", file=sys.stderr)
