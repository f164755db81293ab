"""Request and response bodies of the HTTP API; OpenAPI is generated from these same models."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, StrictBool, model_validator

from services.api.http.parsing import IDEMPOTENCY_KEY_MAX
from shared.jobs import JobState, QueueClass
from shared.rabbitmq_management import QueueFigures

KindName = Annotated[str, Field(min_length=1, max_length=200)]


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: KindName
    args: dict[str, Any] = {}
    queue: QueueClass | None = None
    run_at: AwareDatetime | None = None
    delay_seconds: Annotated[float, Field(ge=0, le=366 * 86400)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] | None = None
    after: uuid.UUID | None = Field(None, description="a continuation: wait for this job to finish first")
    on: Literal["succeeded", "finished"] = Field(
        "succeeded", description="with `after`: run only if it succeeded (else skipped), or once it finished")


class BatchJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: KindName
    args: dict[str, Any] = {}
    queue: QueueClass | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[list[BatchJobIn], Field(min_length=1, max_length=1000)]
    then: BatchJobIn | None = Field(None, description="runs once, when every job of the batch has finished")


class BatchOut(BaseModel):
    id: uuid.UUID
    total: int | None = Field(description="null while the batch is open (its producer still adds jobs)")
    succeeded: int
    failed: int = Field(description="failed, cancelled, deleted or skipped jobs")
    pending: int | None
    callback_id: uuid.UUID | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> BatchOut:
        return cls.model_validate({**{name: row[name] for name in cls.model_fields if name != "pending"},
                                   "pending": None if row["total"] is None
                                   else row["total"] - row["succeeded"] - row["failed"]})


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    args: dict[str, Any]
    queue: QueueClass = Field(description="the queue class (critical, default, low), kept for existing clients; "
                                          "the same as queue_class")
    # Not a RabbitMQ queue (those are jobs.<service>, see rabbitmq_queue): the name says so.
    queue_class: QueueClass | None = Field(None, description="critical, default or low: the message priority")
    rabbitmq_queue: str | None = Field(None, description="the RabbitMQ queue its messages go to, jobs.<service>")
    priority: int
    state: JobState
    state_reason: str | None
    attempt: int
    max_attempts: int
    run_at: datetime
    idempotency_key: str | None
    recurring_id: str | None
    fire_time: datetime | None
    parent_id: uuid.UUID | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    result: Any = None
    created_at: datetime
    updated_at: datetime
    cancelled_by: str | None = Field(None, description="who cancelled the job, when it is cancelled")
    limit_wait: Literal["concurrency", "rate"] | None = Field(
        None, description="the kind's limit this scheduled job is waiting for, if that is why it waits")
    progress_done: int | None = Field(None, description="the handler's last context.progress(done, total, message)")
    progress_total: int | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    after_id: uuid.UUID | None = Field(None, description="a continuation: the job it waits for")
    after_on: Literal["succeeded", "finished"] | None = None
    batch_id: uuid.UUID | None = None
    after_batch_id: uuid.UUID | None = Field(None, description="a batch callback: the batch it waits for")

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> JobOut:
        """From a row or a redacted copy of one (services/api/security/redaction.py)."""
        derived = {"queue_class", "rabbitmq_queue"}
        fields = {name: row[name] for name in cls.model_fields if name not in derived}
        service = row["service"] if "service" in row.keys() else None
        return cls.model_validate({**fields, "queue_class": row["queue"],
                                   "rabbitmq_queue": f"jobs.{service}" if service else None})


class JobStateOut(BaseModel):
    state: JobState
    reason: str | None
    error: str | None
    traceback: str | None
    worker: str | None
    attempt: int
    duration_ms: float | None
    created_at: datetime


class JobLogOut(BaseModel):
    level: str
    message: str
    created_at: datetime


class JobDetailOut(JobOut):
    last_traceback: str | None = None
    history: list[JobStateOut] = []
    logs: list[JobLogOut] = []


# Operator endpoints: job lists and actions, recurring jobs, stats, servers, queues.


class JobListQuery(BaseModel):
    state: JobState | None = None
    queue: QueueClass | None = None
    kind: KindName | None = None
    q: Annotated[str, Field(max_length=200, description="substring of arguments or error text")] | None = None
    since: AwareDatetime | None = Field(None, description="updated at or after")
    until: AwareDatetime | None = Field(None, description="updated before")
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, Field(max_length=200, description="next_cursor of the previous page")] | None = None


class JobListOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class BulkByIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=10_000)]


class BulkByFilter(BaseModel):
    """Every job matching the filter; the state is required so nothing bulk-changes everything by accident."""

    model_config = ConfigDict(extra="forbid")

    state: JobState
    queue: QueueClass | None = None
    kind: KindName | None = None
    q: Annotated[str, Field(max_length=200)] | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 10_000


class BulkJobsRequest(RootModel[BulkByIds | BulkByFilter]):
    """Either explicit ids, or a filter that names a state."""


class BulkResultOut(BaseModel):
    changed: int
    skipped: int
    ids: list[uuid.UUID]


# A recurring job as operators see it, in the API and on the dashboard: its definition, its next
# occurrence and its latest job. (A comment, not a docstring: that would change the OpenAPI document.)
class RecurringOut(BaseModel):
    id: str
    kind: str
    args: dict[str, Any]
    cron: str
    timezone: str
    misfire_policy: str
    enabled: bool
    next_run: datetime | None  # None while paused, or when the stored schedule is invalid
    last_fire_time: datetime | None  # the scheduler's latest occurrence
    last_job_id: uuid.UUID | None  # the latest job of this recurring job, scheduled or triggered
    last_job_state: JobState | None
    last_run_at: datetime | None  # when that latest job was created
    schedule_error: str | None  # why next_run is missing although enabled
    queue: QueueClass | None = None  # None: the kind's queue class


RECURRING_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


class RecurringPut(BaseModel):
    """A whole recurring job definition, created or replaced by PUT /api/recurring/{recurring_id}."""

    model_config = ConfigDict(extra="forbid")

    kind: KindName
    args: dict[str, Any] = {}
    cron: Annotated[str, Field(min_length=1, max_length=200,
                               description="5 crontab fields, or 6 with a leading seconds field")]
    timezone: Annotated[str, Field(min_length=1, max_length=100, description="IANA time zone")] = "UTC"
    misfire_policy: Literal["fire_once", "skip", "fire_all"] = "fire_once"
    misfire_grace_seconds: Annotated[int, Field(ge=0, le=366 * 86400)] = 3600
    queue: QueueClass | None = Field(None, description="queue class of its jobs; null: the kind's")
    enabled: StrictBool = True


class RecurringListOut(RootModel[list[RecurringOut]]):
    pass


class RecurringPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: Annotated[str, Field(min_length=1, max_length=200,
                               description="5 crontab fields, or 6 with a leading seconds field")] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=100, description="IANA time zone")] | None = None
    enabled: StrictBool | None = None


class StatsOut(BaseModel):
    enqueued: int
    scheduled: int
    processing: int
    succeeded: int
    failed: int
    deleted: int
    retrying: int
    cancelled: int = 0
    awaiting: int = 0
    skipped: int = 0
    servers: int = Field(description="processes heartbeating now")


class ServerOut(BaseModel):
    id: str
    service: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    dead: bool


class ServerListOut(RootModel[list[ServerOut]]):
    pass


# The figures the management client reads (shared/rabbitmq_management.py), as they are; no docstring, as before.
class QueueOut(QueueFigures):
    pass


class QueuesOut(BaseModel):
    available: bool
    note: str | None = None
    management_url: str
    queues: list[QueueOut]


class ParkedMessageOut(BaseModel):
    reason: str | None
    job_id: str | None
    kind: str | None
    service: str | None
    payload: str
    id: str = Field("", description="names this copy in POST /api/queues/dead/purge")
    parked_at: datetime | None = Field(None, description="when it was parked; null for copies parked before "
                                                          "copies were stamped")


class ParkedPurgeIn(BaseModel):
    """Exactly one of: every parked copy, the copies with these ids, or those parked longer ago than this."""

    model_config = ConfigDict(extra="forbid")

    all: Literal[True] | None = Field(None, description="true: empty the whole parking lot")
    ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]],
                   Field(min_length=1, max_length=10_000)] | None = None
    older_than_seconds: Annotated[int, Field(ge=0, le=10 * 366 * 86400)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ParkedPurgeIn:
        given = [name for name in ("all", "ids", "older_than_seconds") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of all, ids or older_than_seconds")
        return self


class ParkedPurgeOut(BaseModel):
    removed: int


class ParkedMessagesOut(BaseModel):
    available: bool
    note: str | None = None
    messages: list[ParkedMessageOut]
