"""Request and response bodies of the HTTP API; OpenAPI is generated from these same models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.jobs import JobState, QueueClass


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, Field(min_length=1, max_length=200)]
    args: dict[str, Any] = {}
    queue: QueueClass | None = None
    run_at: AwareDatetime | None = None
    delay_seconds: Annotated[float, Field(ge=0, le=366 * 86400)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    args: dict[str, Any]
    queue: QueueClass
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

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobOut:
        return cls.model_validate({name: row[name] for name in cls.model_fields})


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
