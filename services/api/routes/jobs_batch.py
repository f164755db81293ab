"""POST /api/jobs/batch: up to 1,000 jobs in one transaction (JobClient.enqueue_many).

All or nothing: one bad item refuses the whole batch with a 422 (or a 409 for an idempotency key reused with
other content) naming each such item as `jobs.<index>.<field>`, and writes nothing. Each item may carry
its own idempotency key; a repeated key with the same content answers the existing job (`created` false).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.api.http.app_keys import RUNTIME
from services.api.http.errors import ApiError
from services.api.http.parsing import parse_body
from services.api.openapi.route_table import ApiRoutes
from services.api.openapi.schemas import JobRequest
from services.api.routes.metrics import count_enqueued
from shared.client import BatchRefused, IdempotencyConflict, JobSpec
from shared.jobs import JobState
from shared.registry import InvalidJobArguments, UnknownJobKind

MAX_BATCH = 1000

routes = ApiRoutes("jobs")


class JobBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[list[JobRequest], Field(min_length=1, max_length=MAX_BATCH)]


class JobBatchItemOut(BaseModel):
    index: int  # the item's position in the request
    id: uuid.UUID
    kind: str
    state: JobState
    created: bool  # false: its idempotency key answered an existing job
    idempotency_key: str | None


class JobBatchOut(BaseModel):
    created: int
    existing: int
    items: list[JobBatchItemOut]


@routes.post("/api/jobs/batch", summary="Enqueue up to 1,000 jobs in one transaction",
             body=JobBatchRequest, responses={202: JobBatchOut, 200: JobBatchOut}, errors=(400, 401, 409, 413, 422))
async def enqueue_batch(request: web.Request) -> web.Response:
    body = await parse_body(request, JobBatchRequest)
    specs = [JobSpec(item.kind, item.args, queue=item.queue, run_at=item.run_at, delay=item.delay_seconds,
                     max_attempts=item.max_attempts, idempotency_key=item.idempotency_key) for item in body.jobs]
    try:
        jobs = await request.app[RUNTIME].client.enqueue_many(specs)
    except BatchRefused as refused:
        raise refusal(refused) from None
    for job in jobs:
        if job.created:
            count_enqueued(request.app, job.kind)
    items = [JobBatchItemOut(index=index, id=job.id, kind=job.kind, state=job.state, created=job.created,
                             idempotency_key=spec.idempotency_key)
             for index, (job, spec) in enumerate(zip(jobs, specs, strict=True))]
    created = sum(job.created for job in jobs)
    out = JobBatchOut(created=created, existing=len(jobs) - created, items=items)
    return web.json_response(out.model_dump(mode="json"), status=202 if created else 200)


def refusal(refused: BatchRefused) -> ApiError:
    """409 when an item reuses an idempotency key with other content, else 422; each refused item named."""
    details = []
    conflict = False
    for index, error in refused.errors:
        field = f"jobs.{index}"
        if isinstance(error, UnknownJobKind):
            details.append({"field": f"{field}.kind", "message": str(error)})
        elif isinstance(error, InvalidJobArguments):
            details += [{"field": f"{field}.args.{item['field']}", "message": item["message"]}
                        for item in error.details]
        elif isinstance(error, IdempotencyConflict):
            conflict = True
            details.append({"field": f"{field}.idempotency_key", "message": str(error)})
        else:  # ValueError: run_at without a zone, run_at with delay_seconds
            details.append({"field": f"{field}.run_at", "message": str(error)})
    if conflict:
        return ApiError(409, "idempotency_conflict", str(refused), details)
    return ApiError(422, "validation_error", str(refused), details)
