"""/jobs: the operators' dashboard. Overview, job lists with search, and the job page; see also
system.py (recurring, queues, servers), actions.py (every POST), parking.py (the parking lot's purge) and
services/api/security/ (who may see and do what)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from services.api.dashboard import actions, parking, reports, system
from services.api.dashboard import formatting as fmt
from services.api.dashboard.filters import parse_filter
from services.api.dashboard.render import STATE_ORDER, html_errors, refusal_page, render, render_login
from services.api.http.app_keys import RUNTIME
from services.api.http.parsing import path_uuid
from services.api.security import auth, sessions
from services.api.security.redaction import JobRedactor, redact_job
from services.api.security.roles import tokens_configured
from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.db import servers as server_queries
from shared.jobs import CANCELLABLE, DELETABLE, FINAL_STATES, REQUEUEABLE, JobState, QueueClass
from shared.lifecycle import dead_after
from shared.runtime import Runtime

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
REALTIME_SECONDS = 60
# Every open overview polls every 2 s; within this many seconds they share one answer instead of
# each running the counts again.
REALTIME_REUSE_SECONDS = 1.0
REALTIME_CACHE = web.AppKey("dashboard_realtime_cache", dict)

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    """Everything the dashboard adds to the api application."""
    sessions.install(app)
    app[auth.REFUSAL_PAGE] = refusal_page
    app[REALTIME_CACHE] = {}
    app.middlewares.append(html_errors)
    app.add_routes(routes)
    app.add_routes(system.routes)
    app.add_routes(actions.routes)
    app.add_routes(parking.routes)
    app.router.add_static("/jobs/static/", STATIC, name="dashboard_static", append_version=True)
    app.add_routes(reports.routes)


def static_url(request: web.Request, filename: str) -> str:
    return str(request.app.router["dashboard_static"].url_for(filename=filename))


async def state_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Jobs per state, keyed by name in the order the pages list the states."""
    counts = await job_admin.counts_by_state(pool)
    return {state.value: counts.get(state, 0) for state in STATE_ORDER}


def chart_points(series: list[job_admin.SeriesPoint]) -> list[tuple[datetime, int, int]]:
    return [(point.at, point.succeeded, point.failed) for point in series]


@routes.get("/jobs/")
async def trailing_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/jobs")


@routes.get("/jobs")
async def overview(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    pool = runtime.pool
    counts = await state_counts(pool)
    servers = await server_queries.list_servers(pool, dead_after(runtime.settings))
    day = await job_admin.per_hour(pool, 24)
    week = await job_admin.per_hour(pool, 24 * 7)
    realtime = await job_admin.per_second(pool, REALTIME_SECONDS)
    return render(
        request, "overview.html", nav="overview",
        counts=counts,
        servers_alive=sum(1 for server in servers if not server["dead"]),
        servers_dead=sum(1 for server in servers if server["dead"]),
        day=fmt.chart(chart_points(day), label_every=3, height=200),
        week=fmt.chart(chart_points(week), label_every=24, label_format="%a %d", height=200),
        realtime=fmt.chart(chart_points(realtime), label_every=10, label_format="%H:%M:%S", width=1200, height=180),
        lateness=await job_admin.lateness_by_kind(pool),
        script=static_url(request, "realtime.js"),
    )


@routes.get("/jobs/realtime.json")
async def realtime_json(request: web.Request) -> web.Response:
    """What the overview's graph polls every 2 s: outcomes per second and the counts by state."""
    cache: dict[str, Any] = request.app[REALTIME_CACHE]
    now = time.monotonic()
    if cache.get("body") is None or now - cache["at"] > REALTIME_REUSE_SECONDS:
        cache.update(body=await realtime_body(request.app[RUNTIME]), at=now)
    return web.json_response(cache["body"], headers={"Cache-Control": "no-store"})


async def realtime_body(runtime: Runtime) -> dict[str, Any]:
    series = await job_admin.per_second(runtime.pool, REALTIME_SECONDS)
    counts = await state_counts(runtime.pool)
    servers = await server_queries.list_servers(runtime.pool, dead_after(runtime.settings))
    return {
        "counts": counts,
        "servers_alive": sum(1 for server in servers if not server["dead"]),
        "series": [{"at": point.at.isoformat(), "succeeded": point.succeeded, "failed": point.failed}
                   for point in series],
    }


@routes.get("/jobs/list")
async def job_list(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    parsed = parse_filter(request.query, datetime.now(UTC))
    cursor = request.query.get("cursor") or None
    page = job_admin.JobPage([], None)
    errors = dict(parsed.errors)
    if not errors:
        try:
            # The Scheduled list answers "what runs next", so it is ordered by run_at, soonest first.
            page = await job_admin.search_jobs(runtime.pool, parsed.job_filter, limit=PAGE_SIZE, cursor=cursor,
                                                soonest_first=parsed.job_filter.state is JobState.SCHEDULED)
        except job_admin.InvalidCursor:
            errors["cursor"] = "this page link is not valid any more; start from the newest"
    counts = await state_counts(runtime.pool)
    state = parsed.job_filter.state
    kinds = sorted({kind.name for kind in runtime.registry} | ({parsed.values["kind"]} - {""}))
    return render(
        request, "jobs.html", nav="jobs", status=422 if errors else 200,
        filter=parsed, errors=errors, rows=[redact_job(row) for row in page.rows], next_cursor=page.next_cursor,
        first_page=cursor is None,
        counts=counts, state=state.value if state else "",
        kinds=kinds, queues=[queue.value for queue in QueueClass],
        bulk=state in (JobState.FAILED, JobState.SUCCEEDED, JobState.DELETED, JobState.SCHEDULED)
        or state in CANCELLABLE,
        requeueable={s.value for s in REQUEUEABLE}, deletable={s.value for s in DELETABLE},
        cancellable={s.value for s in CANCELLABLE},
    )


@routes.get("/jobs/job/{job_id}")
async def job_page(request: web.Request) -> web.Response:
    pool = request.app[RUNTIME].pool
    job_id = path_uuid(request, "job_id", "job")
    row = await job_queries.get_job(pool, job_id)
    if row is None:
        raise web.HTTPNotFound(reason=f"no job {job_id}")
    # Everything shown is redacted for every caller (README: operators see raw values in the JSON API only).
    redactor = JobRedactor(row["args"])
    steps = fmt.timeline([redactor.row(item) for item in await job_queries.job_history(pool, job_id)])
    parent = await job_queries.get_job(pool, row["parent_id"]) if row["parent_id"] else None
    state = JobState(row["state"])
    return render(
        request, "job.html", nav="jobs",
        job=redactor.row(row), args=fmt.redact(row["args"]), steps=steps, attempts=fmt.failed_attempts(steps),
        logs=[redactor.row(item) for item in await job_queries.job_logs(pool, job_id)],
        emails=await job_admin.job_emails(pool, job_id),
        parent=redact_job(parent) if parent else None,
        children=[redact_job(child) for child in await job_admin.children(pool, job_id)],
        children_counts={s.value: n for s, n in (await job_admin.children_counts(pool, job_id)).items()},
        can_requeue=state in REQUEUEABLE, can_delete=state in DELETABLE, can_enqueue_now=state is JobState.SCHEDULED,
        can_cancel=state in CANCELLABLE, progress=fmt.progress(redactor.row(row)),
        waits_for=redact_job(after) if (after := await _job_or_none(pool, row["after_id"])) else None,
        batches=[(label, batch) for label, batch_id in (("Batch", row["batch_id"]), ("Callback of batch",
                                                                                 row["after_batch_id"]))
                 if batch_id is not None and (batch := await job_queries.get_batch(pool, batch_id)) is not None],
        live=is_live(state, row["updated_at"]),
        script=static_url(request, "job.js"),
    )


async def _job_or_none(pool: asyncpg.Pool, job_id: uuid.UUID | None) -> asyncpg.Record | None:
    return None if job_id is None else await job_queries.get_job(pool, job_id)


# A run's log lines are written with its outcome or just after it, so the page keeps following a job
# for a while after its final state, until those lines are shown too.
SETTLE_SECONDS = 10.0
LOG_LINES_SHOWN = 1000  # job_queries.job_logs' limit


def is_live(state: JobState, updated_at: datetime) -> bool:
    """Whether the job page should follow the job: moving, or final so recently that lines may still come."""
    if state is JobState.SCHEDULED:
        return False
    if state not in FINAL_STATES:
        return True
    return (datetime.now(UTC) - updated_at).total_seconds() < SETTLE_SECONDS


@routes.get("/jobs/job/{job_id}/state.json")
async def job_state_json(request: web.Request) -> web.Response:
    """The job page polls this while the job is moving; it reloads when the state or the log changes."""
    job_id = path_uuid(request, "job_id", "job")
    pool = request.app[RUNTIME].pool
    row = await job_queries.get_job(pool, job_id)
    if row is None:
        raise web.HTTPNotFound(reason=f"no job {job_id}")
    logs = await pool.fetchval("SELECT count(*) FROM (SELECT 1 FROM job_logs WHERE job_id = $1 LIMIT $2) AS shown",
                               job_id, LOG_LINES_SHOWN)
    body: dict[str, Any] = {"state": row["state"], "attempt": row["attempt"],
                            "updated_at": row["updated_at"].isoformat(), "logs": logs,
                            "live": is_live(JobState(row["state"]), row["updated_at"]),
                            "progress": fmt.progress(JobRedactor(row["args"]).row(row))}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@routes.get("/jobs/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    if not tokens_configured(request.app[RUNTIME].settings):
        raise web.HTTPSeeOther("/jobs")
    return render_login(request, next_path=request.query.get("next", "/jobs"))
