"""/api/jobs: enqueue and inspect jobs."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.api.errors import ApiError, parse_body
from services.api.openapi import ApiRoutes
from services.api.schemas import JobDetailOut, JobLogOut, JobOut, JobRequest, JobStateOut
from services.api.typedefs import RUNTIME
from shared.client import IdempotencyConflict
from shared.db import jobs as job_queries
from shared.registry import InvalidJobArguments, UnknownJobKind

routes = ApiRoutes("jobs")


def job_id_from(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["job_id"])
    except ValueError:
        raise ApiError(
            404, "not_found", "no job with this id", [{"field": "job_id", "message": "not a uuid"}]
        ) from None


@routes.post("/api/jobs", summary="Enqueue a job", body=JobRequest, responses={202: JobOut, 200: JobOut},
             errors=(400, 401, 409, 413, 422))
async def enqueue_job(request: web.Request) -> web.Response:
    body = await parse_body(request, JobRequest)
    runtime = request.app[RUNTIME]
    key = body.idempotency_key or request.headers.get("Idempotency-Key")
    try:
        job = await runtime.client.enqueue(
            body.kind, body.args, queue=body.queue, run_at=body.run_at, delay=body.delay_seconds,
            max_attempts=body.max_attempts, idempotency_key=key,
        )
    except UnknownJobKind as error:
        raise ApiError(422, "unknown_kind", str(error), [{"field": "kind", "message": str(error)}]) from None
    except InvalidJobArguments as error:
        details = [{"field": f"args.{item['field']}", "message": item["message"]} for item in error.details]
        raise ApiError(422, "validation_error", str(error), details) from None
    except IdempotencyConflict as error:
        raise ApiError(409, "idempotency_conflict", str(error),
                       [{"field": "idempotency_key", "message": str(error)}]) from None
    except ValueError as error:
        raise ApiError(422, "validation_error", str(error), [{"field": "run_at", "message": str(error)}]) from None
    assert job is not None  # only recurring occurrences can collide silently
    row = await job_queries.get_job(runtime.pool, job.id)
    assert row is not None
    return web.json_response(JobOut.from_row(row).model_dump(mode="json"), status=202 if job.created else 200)


@routes.get(
    "/api/jobs/{job_id}", summary="A job with its history and logs", responses={200: JobDetailOut}, errors=(401, 404)
)
async def get_job(request: web.Request) -> web.Response:
    job_id = job_id_from(request)
    pool = request.app[RUNTIME].pool
    row = await job_queries.get_job(pool, job_id)
    if row is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    detail = JobDetailOut.model_validate(
        {
            **JobOut.from_row(row).model_dump(),
            "last_traceback": row["last_traceback"],
            "history": [JobStateOut.model_validate(dict(item)) for item in await job_queries.job_history(pool, job_id)],
            "logs": [JobLogOut.model_validate(dict(item)) for item in await job_queries.job_logs(pool, job_id)],
        }
    )
    return web.json_response(detail.model_dump(mode="json"))
