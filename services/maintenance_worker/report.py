"""The daily report: which day it covers (pure) and its figures gathered into one JSON document."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.db import reports
from shared.db.pool import Executor


def report_window(moment: datetime, timezone: str) -> tuple[date, datetime, datetime]:
    """The day before `moment` in `timezone`, and its [start, end) in UTC (23 or 25 hours across DST)."""
    zone = ZoneInfo(timezone)
    day = moment.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return day, start, end


async def gather_report(executor: Executor, day: date, start: datetime, end: datetime, timezone: str) -> dict[str, Any]:
    jobs = await reports.jobs_finished_by_kind(executor, start, end)
    lateness = await reports.lateness_by_kind(executor, start, end)
    return {
        "day": day.isoformat(),
        "timezone": timezone,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "events_created": await reports.count_events_created(executor, start, end),
        "participants_registered": await reports.count_participants_registered(executor, start, end),
        "emails": await reports.count_emails(executor, start, end),
        "jobs": [{"kind": row["kind"], "succeeded": row["succeeded"], "failed": row["failed"]} for row in jobs],
        "lateness": [
            {"kind": row["kind"], "count": row["count"], "p50_seconds": round(float(row["p50_seconds"]), 3),
             "p99_seconds": round(float(row["p99_seconds"]), 3)}
            for row in lateness
        ],
    }
