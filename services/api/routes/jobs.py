"""/api/jobs: enqueue and inspect jobs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import ApiError, refused
from services.api.http.parsing import idempotency_key_header, parse_body, parse_query, path_uuid
from services.api.openapi.route_table import IDEMPOTENCY_KEY, UUID_PATH, ApiRoutes
from services.api.openapi.schemas import (
    BatchJobIn,
    BatchOut,
    BatchRequest,
    BulkByIds,
    BulkJobsRequest,
    BulkResultOut,
    JobDetailOut,
    JobListOut,
    JobListQuery,
    JobLogOut,
    JobOut,
    JobRequest,
    JobStateOut,
)
from services.api.routes.metrics import count_enqueued
from services.api.security.redaction import JobRedactor, redact_job
from services.api.security.roles import actor, sees_secrets
from shared import job_actions
from shared.client import IdempotencyConflict, JobSpec, UnknownParentJob
from shared.db import job_admin
from shared.db import jobs as job_queries
from shared.registry import InvalidJobArguments, UnknownJobKind
from shared.runtime import Runtime

routes = ApiRoutes("jobs")


@routes.post("/api/jobs", summary="Enqueue a job", body=JobRequest, responses={202: JobOut, 200: JobOut},
             errors=(400, 401, 409, 413, 422), headers=[IDEMPOTENCY_KEY])
async def enqueue_job(request: web.Request) -> web.Response:
    body = await parse_body(request, JobRequest)
    runtime = request.app[RUNTIME]
    key = body.idempotency_key or idempotency_key_header(request)
    try:
        job = await runtime.client.enqueue(
            body.kind, body.args, queue=body.queue, run_at=body.run_at, delay=body.delay_seconds,
            max_attempts=body.max_attempts, idempotency_key=key, after=body.after, on=body.on,
        )
    except UnknownJobKind as error:
        raise ApiError(422, "unknown_kind", str(error), [{"field": "kind", "message": str(error)}]) from None
    except UnknownParentJob as error:
        raise ApiError(422, "validation_error", str(error), [{"field": "after", "message": str(error)}]) from None
    except InvalidJobArguments as error:
        details = [{"field": f"args.{item['field']}", "message": item["message"]} for item in error.details]
        raise ApiError(422, "validation_error", str(error), details) from None
    except IdempotencyConflict as error:
        raise ApiError(409, "idempotency_conflict", str(error),
                       [{"field": "idempotency_key", "message": str(error)}]) from None
    except ValueError as error:
        raise ApiError(422, "validation_error", str(error), [{"field": "run_at", "message": str(error)}]) from None
    assert job is not None  # only recurring occurrences can collide silently
    if job.created:
        count_enqueued(request.app, job.kind)
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None
    return web.json_response(JobOut.from_row(row).model_dump(mode="json"), status=202 if job.created else 200)


@routes.get(
    "/api/jobs/{job_id}", summary="A job with its history and logs", responses={200: JobDetailOut}, errors=(401, 404)
)
async def get_job(request: web.Request) -> web.Response:
    job_id = path_uuid(request, "job_id", "job")
    pool = request.app[RUNTIME].pool
    row = await job_queries.get_job(pool, job_id)
    if row is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    history = [dict(item) for item in await job_queries.job_history(pool, job_id)]
    logs = [dict(item) for item in await job_queries.job_logs(pool, job_id)]
    shown: dict[str, Any] = dict(row)
    if not sees_secrets(request):
        redactor = JobRedactor(row["args"])
        shown, history, logs = redactor.row(row), [redactor.row(item) for item in history], \
            [redactor.row(item) for item in logs]
    detail = JobDetailOut.model_validate(
        {
            **JobOut.from_row(shown).model_dump(),
            "last_traceback": shown["last_traceback"],
            "history": [JobStateOut.model_validate(item) for item in history],
            "logs": [JobLogOut.model_validate(item) for item in logs],
        }
    )
    return web.json_response(detail.model_dump(mode="json"))


@routes.get("/api/jobs", summary="Jobs by state, queue and kind, searched over the whole history, newest first",
            query=JobListQuery, responses={200: JobListOut}, errors=(401, 422))
async def list_jobs(request: web.Request) -> web.Response:
    query = parse_query(request, JobListQuery)
    raw = sees_secrets(request)
    job_filter = job_admin.JobFilter(state=query.state, queue=query.queue, kind=query.kind, q=query.q,
                                      since=query.since, until=query.until, redacted=not raw)
    try:
        page = await job_admin.search_jobs(request.app[RUNTIME].pool, job_filter, limit=query.limit,
                                            cursor=query.cursor)
    except job_admin.InvalidCursor as error:
        details = [{"field": "query.cursor", "message": str(error)}]
        raise ApiError(422, "validation_error", str(error), details) from None
    body = JobListOut(items=[JobOut.from_row(row if raw else redact_job(row)) for row in page.rows],
                      next_cursor=page.next_cursor)
    return web.json_response(body.model_dump(mode="json"))


async def _act(request: web.Request, action: Callable[[Runtime, uuid.UUID], Awaitable[object]]) -> web.Response:
    """Run an operator action on the job in the path and answer with the job as it is now."""
    job_id = path_uuid(request, "job_id", "job")
    try:
        await action(request.app[RUNTIME], job_id)
    except job_actions.ActionRefused as error:
        raise refused(error) from None
    row = await job_queries.get_job(request.app[RUNTIME].pool, job_id)
    if row is None:  # removed by retention between the action and this read
        raise ApiError(404, "not_found", f"no job {job_id}")
    return web.json_response(JobOut.from_row(row).model_dump(mode="json"))


@routes.post("/api/jobs/{job_id}/requeue", summary="Requeue a job with a fresh attempt budget",
             responses={200: JobOut}, errors=(401, 403, 404, 409))
async def requeue_job(request: web.Request) -> web.Response:
    return await _act(request, job_actions.requeue_job)


@routes.post("/api/jobs/{job_id}/delete", summary="Delete a job (kept in the history as deleted)",
             responses={200: JobOut}, errors=(401, 403, 404, 409))
async def delete_job(request: web.Request) -> web.Response:
    return await _act(request, job_actions.delete_job)


@routes.post("/api/jobs/{job_id}/cancel",
             summary="Cancel a scheduled, enqueued, retrying or processing job (a running handler is stopped "
                     "within about a heartbeat); it never runs again unless requeued",
             responses={200: JobOut}, errors=(401, 403, 404, 409))
async def cancel_job(request: web.Request) -> web.Response:
    who = actor(request)
    return await _act(request, lambda runtime, job_id: job_actions.cancel_job(runtime, job_id, who))


@routes.post("/api/jobs/{job_id}/enqueue", summary="Run a scheduled job now instead of at its run_at",
             responses={200: JobOut}, errors=(401, 403, 404, 409))
async def enqueue_now(request: web.Request) -> web.Response:
    return await _act(request, job_actions.enqueue_now)


async def _bulk(
    request: web.Request,
    by_ids: Callable[[Runtime, list[uuid.UUID]], Awaitable[job_actions.BulkResult]],
    matching: Callable[[Runtime, job_admin.JobFilter, int], Awaitable[job_actions.BulkResult]],
) -> web.Response:
    body = (await parse_body(request, BulkJobsRequest)).root
    runtime = request.app[RUNTIME]
    if isinstance(body, BulkByIds):
        result = await by_ids(runtime, body.ids)
    else:
        job_filter = job_admin.JobFilter(state=body.state, queue=body.queue, kind=body.kind, q=body.q)
        result = await matching(runtime, job_filter, body.limit)
    out = BulkResultOut(changed=len(result.changed), skipped=result.skipped, ids=result.changed)
    return web.json_response(out.model_dump(mode="json"))


@routes.post("/api/jobs/bulk-requeue", summary="Requeue jobs by ids, or every job matching a filter with a state",
             body=BulkJobsRequest, responses={200: BulkResultOut}, errors=(400, 401, 403, 413, 422))
async def bulk_requeue(request: web.Request) -> web.Response:
    return await _bulk(request, job_actions.requeue_jobs, job_actions.requeue_matching)


@routes.post("/api/jobs/bulk-delete", summary="Delete jobs by ids, or every job matching a filter with a state",
             body=BulkJobsRequest, responses={200: BulkResultOut}, errors=(400, 401, 403, 413, 422))
async def bulk_delete(request: web.Request) -> web.Response:
    return await _bulk(request, job_actions.delete_jobs, job_actions.delete_matching)


@routes.post("/api/jobs/bulk-cancel", summary="Cancel jobs by ids, or every job matching a filter with a state",
             body=BulkJobsRequest, responses={200: BulkResultOut}, errors=(400, 401, 403, 422))
async def bulk_cancel(request: web.Request) -> web.Response:
    who = actor(request)
    return await _bulk(request, lambda runtime, ids: job_actions.cancel_jobs(runtime, ids, who),
                       lambda runtime, job_filter, limit: job_actions.cancel_matching(runtime, job_filter, who, limit))


def _spec(job: BatchJobIn) -> JobSpec:
    return JobSpec(job.kind, job.args, queue=job.queue, max_attempts=job.max_attempts)


@routes.post("/api/batches", summary="Enqueue jobs as a batch, with a callback job run once when all have finished",
             body=BatchRequest, responses={202: BatchOut}, errors=(400, 422), operator=True)
async def enqueue_batch(request: web.Request) -> web.Response:
    body = await parse_body(request, BatchRequest)
    runtime = request.app[RUNTIME]
    specs = [("jobs." + str(index), job) for index, job in enumerate(body.jobs)]
    if body.then is not None:
        specs.append(("then", body.then))
    for where, job in specs:  # every job checked before anything is written, errors naming its place
        try:
            runtime.registry.validate(job.kind, job.args)
        except UnknownJobKind as error:
            raise ApiError(422, "unknown_kind", str(error), [{"field": f"{where}.kind", "message": str(error)}]) \
                from None
        except InvalidJobArguments as error:
            details = [{"field": f"{where}.args.{item['field']}", "message": item["message"]} for item in error.details]
            raise ApiError(422, "validation_error", str(error), details) from None
    batch = await runtime.client.enqueue_batch([_spec(job) for job in body.jobs],
                                               _spec(body.then) if body.then is not None else None)
    row = await job_queries.get_batch(runtime.pool, batch.id)
    assert row is not None
    return web.json_response(BatchOut.from_row(row).model_dump(mode="json"), status=202)


@routes.get("/api/batches/{batch_id}", summary="A batch's progress: succeeded, failed and pending jobs",
            responses={200: BatchOut}, errors=(404,), operator=True, path_schemas={"batch_id": UUID_PATH})
async def get_batch(request: web.Request) -> web.Response:
    batch_id = path_uuid(request, "batch_id", "batch")
    row = await job_queries.get_batch(request.app[RUNTIME].pool, batch_id)
    if row is None:
        raise ApiError(404, "not_found", f"no batch {batch_id}", [{"field": "batch_id", "message": "not found"}])
    return web.json_response(BatchOut.from_row(row).model_dump(mode="json"))
