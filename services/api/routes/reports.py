"""The stored daily reports (written by `maintenance.daily_report`): `GET /api/reports` (the dashboard's Reports
page shows the same, services/api/dashboard/reports.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.api.http.app_keys import RUNTIME
from services.api.http.parsing import parse_query
from services.api.openapi.route_table import ApiRoutes

routes = ApiRoutes("reports")


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=366, description="how many days, newest first")] = 30


class ReportOut(BaseModel):
    day: date
    content: dict[str, Any] = Field(description="the day's figures: events_created, participants_registered, "
                                                "emails {sent, failed}, jobs by kind {succeeded, failed}, "
                                                "lateness by kind {count, p50_seconds, p99_seconds}")
    job_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ReportListOut(BaseModel):
    reports: list[ReportOut]


async def recent_reports(pool: asyncpg.Pool, limit: int) -> list[ReportOut]:
    rows = await pool.fetch(
        "SELECT day, content, job_id, created_at, updated_at FROM reports ORDER BY day DESC LIMIT $1", limit)
    return [ReportOut.model_validate(dict(row)) for row in rows]


@routes.get("/api/reports", summary="The daily reports, newest first: figures, failures, lateness by kind",
            query=ReportQuery, responses={200: ReportListOut}, errors=(401, 422), operator=True)
async def list_reports(request: web.Request) -> web.Response:
    query = parse_query(request, ReportQuery)
    body = ReportListOut(reports=await recent_reports(request.app[RUNTIME].pool, query.limit))
    return web.json_response(body.model_dump(mode="json"))

