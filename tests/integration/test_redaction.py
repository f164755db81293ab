"""One redaction rule everywhere: a secret argument of a failed job is `[redacted]` for a read-only caller in its
arguments, result, error, traceback, history and log lines, in the dashboard for everyone, and no substring of
it finds the job in a read-only search; operators get the raw values from the JSON API only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.api.security.redaction import REDACTED, SECRET_NAME_PATTERN, SECRET_PAIR_PATTERN, redact_text
from shared.db.job_admin import JobFilter, search_sql
from shared.jobs import QueueClass
from shared.kinds import Args
from shared.messaging.consumer import JobContext
from shared.registry import JobKind, PermanentError
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, test_registry
from tests.support.waiting import eventually

SECRET = "hunter2-Zq8x"
TOKEN = "tok-77c1d2e3"
OPERATOR = {"Authorization": "Bearer operator-token-0123456789"}
READ_ONLY = {"Authorization": "Bearer read-only-token-0123456789"}


class LeakyArgs(Args):
    to: str
    smtp_password: str
    options: dict[str, Any] = {}


async def leaky(ctx: JobContext, args: LeakyArgs) -> None:
    """A careless handler: its secrets reach a log line and the error text."""
    ctx.log.info("connecting as %s with password %s, cookie=%s", args.to, args.smtp_password, "c00kie-value")
    raise PermanentError(f"login refused for {args.to}: password {args.smtp_password!r}, "
                         f"{args.options.get('auth_token')}")


LEAKY = JobKind("test.leaky", LeakyArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30)


@pytest.fixture
async def api(env: TestEnvironment) -> AsyncIterator[TestClient[Any, Any]]:
    async with platform_api(env, registry=test_registry(LEAKY), api_token="operator-token-0123456789",
                            api_read_only_token="read-only-token-0123456789") as client:
        yield client


async def failed_leaky_job(api: TestClient[Any, Any], start_worker: StartWorker, db: asyncpg.Connection) -> str:
    await start_worker(registry=test_registry(LEAKY), handlers={**TEST_HANDLERS, "test.leaky": leaky})
    response = await api.post("/api/jobs", headers=OPERATOR, json={"kind": "test.leaky", "args": {
        "to": "ops@example.com", "smtp_password": SECRET, "options": {"auth_token": TOKEN, "retries": 2}}})
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]

    async def failed_with_log() -> bool:
        state = await db.fetchval("SELECT state FROM jobs WHERE id = $1", uuid.UUID(job_id))
        logs = await db.fetchval("SELECT count(*) FROM job_logs WHERE job_id = $1 AND message LIKE 'connecting%'",
                                 uuid.UUID(job_id))
        return state == "failed" and logs > 0

    await eventually(failed_with_log, timeout=30, what="the leaky job to fail with its log line")
    return job_id


async def test_a_read_only_caller_never_sees_or_finds_a_secret_argument(
    api: TestClient[Any, Any], start_worker: StartWorker, db: asyncpg.Connection, env: TestEnvironment
) -> None:
    job_id = await failed_leaky_job(api, start_worker, db)
    raw = await (await api.get(f"/api/jobs/{job_id}", headers=OPERATOR)).text()
    assert SECRET in raw and TOKEN in raw  # the leak is real: operators see it in the JSON API

    detail = await (await api.get(f"/api/jobs/{job_id}", headers=READ_ONLY)).json()
    text = str(detail)
    assert SECRET not in text and TOKEN not in text and "c00kie-value" not in text
    assert detail["args"]["smtp_password"] == REDACTED
    assert detail["args"]["options"] == {"auth_token": REDACTED, "retries": 2}
    assert detail["args"]["to"] == "ops@example.com"
    assert REDACTED in detail["last_error"] and "login refused for ops@example.com" in detail["last_error"]
    assert REDACTED in detail["last_traceback"]
    assert any(REDACTED in (step["error"] or "") for step in detail["history"])
    assert detail["logs"] and all(SECRET not in line["message"] for line in detail["logs"])
    assert any("cookie=[redacted]" in line["message"] for line in detail["logs"])

    listed = await (await api.get("/api/jobs", params={"state": "failed"}, headers=READ_ONLY)).json()
    assert [item["id"] for item in listed["items"]] == [job_id]
    assert SECRET not in str(listed) and TOKEN not in str(listed)

    async def found(q: str, headers: dict[str, str]) -> list[str]:
        response = await api.get("/api/jobs", params={"q": q}, headers=headers)
        return [item["id"] for item in (await response.json())["items"]]

    for piece in (SECRET, SECRET[2:9], "Zq8x", TOKEN[4:], "c00kie"):
        assert await found(piece, READ_ONLY) == [], piece
    assert await found("ops@example", READ_ONLY) == [job_id]  # what it is shown, it finds
    assert await found("login refused", READ_ONLY) == [job_id]
    assert await found(SECRET[2:9], OPERATOR) == [job_id]

    # The dashboard redacts for everyone, operators included, and searches what it shows.
    for headers in (OPERATOR, READ_ONLY):
        page = await (await api.get(f"/jobs/job/{job_id}", headers=headers)).text()
        assert SECRET not in page and TOKEN not in page and REDACTED in page
        listing = await (await api.get("/jobs/list", params={"q": "Zq8x"}, headers=headers)).text()
        assert job_id not in listing


async def test_the_sql_rule_is_the_python_rule(db: asyncpg.Connection) -> None:
    assert await db.fetchval("SELECT secret_name_pattern()") == SECRET_NAME_PATTERN
    assert await db.fetchval("SELECT secret_pair_pattern()") == SECRET_PAIR_PATTERN
    samples = ["boom password=hunter2, Authorization: Bearer abc.def x", '{"api_key": "k1", "name": "Ann"}',
               "secretary meeting at 10", "Cookie: sid=abc; theme=dark", "token:'t0k' and SMTP_PASSWORD = pw1"]
    for sample in samples:
        in_sql = await db.fetchval("SELECT redact_text($1, $2::text[])", sample, ["abc.def"])
        assert in_sql == redact_text(sample, ["abc.def"]), sample
    redacted = await db.fetchval(
        """SELECT jobs_redacted_search_text('{"a": [{"client_secret": "s1"}, "x"], "password": 7}', 'err 7 s1')""")
    assert redacted == ('{"a": [{"client_secret": "[redacted]"}, "x"], "password": "[redacted]"}'
                        " err [redacted] [redacted]")


async def test_the_search_stays_on_the_trigram_index_for_a_read_only_caller(db: asyncpg.Connection) -> None:
    sql, params = search_sql(JobFilter(q="hunter", redacted=True), None, 50)
    await db.execute("SET enable_seqscan = off")
    plan = "\n".join(row[0] for row in await db.fetch(f"EXPLAIN {sql}", *params))
    assert "jobs_search_trgm_idx" in plan, plan
