"""Handlers of the maintenance service's job kinds: archiving, retention, the daily report, the reaper."""

from __future__ import annotations

from typing import Any

from services.maintenance_worker.report import gather_report, report_window
from shared.db import maintenance, reports
from shared.db import servers as server_queries
from shared.handler_api import Handler, IdempotencyConflict, InvalidJobArguments, JobContext, handlers_on, handles
from shared.kinds import (
    CLEANUP_EXPIRED_EVENTS,
    CLEANUP_OLD_LOGS,
    DAILY_REPORT,
    EMAIL_SEND,
    REAP_DEAD_SERVERS,
    NoArgs,
)
from shared.lifecycle import dead_after
from shared.settings import Settings


class MaintenanceHandlers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @handles(CLEANUP_EXPIRED_EVENTS)
    async def cleanup_expired_events(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        days = self.settings.event_archive_days
        await ctx.progress(0, None, f"archiving events that ended more than {days} days ago")
        archived = await maintenance.archive_ended_events(ctx.pool, days)
        await ctx.progress(len(archived), len(archived), "events archived")
        ctx.log.info("archived %d events that ended more than %d days ago", len(archived), days)
        return {"archived": len(archived)}

    @handles(CLEANUP_OLD_LOGS)
    async def cleanup_old_logs(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        # Two phases of batches whose sizes are not known ahead: counts without a total.
        async def logs_deleted(total: int) -> None:
            await ctx.progress(total, None, "step 1 of 2: log lines deleted")

        logs = await maintenance.delete_old_logs(ctx.pool, self.settings.log_retention_days, on_batch=logs_deleted)

        async def jobs_deleted(total: int) -> None:
            await ctx.progress(total, None, f"step 2 of 2: finished jobs deleted ({logs} log lines before)")

        jobs = await maintenance.delete_finished_jobs(ctx.pool, self.settings.job_retention_days,
                                                      on_batch=jobs_deleted)
        ctx.log.info("deleted %d log lines older than %d days and %d succeeded/deleted jobs older than %d days",
                     logs, self.settings.log_retention_days, jobs, self.settings.job_retention_days)
        return {"log_lines_deleted": logs, "jobs_deleted": jobs}

    @handles(DAILY_REPORT)
    async def daily_report(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        # The day is fixed by when the job was meant to run, so a late or retried run reports the same day.
        moment = await reports.job_fire_time(ctx.pool, ctx.job_id)
        assert moment is not None, "a running job has a row"
        timezone = self.settings.scheduler_timezone
        day, start, end = report_window(moment, timezone)
        steps = 2 + len(self.settings.admin_emails)
        await ctx.progress(0, steps, f"gathering the report for {day.isoformat()}")
        content = await gather_report(ctx.pool, day, start, end, timezone)
        await ctx.progress(1, steps, "storing the report")
        await reports.store_report(ctx.pool, day, content, ctx.job_id)
        await ctx.progress(2, steps, "mailing the admins")
        ctx.log.info("report for %s stored", day.isoformat())
        mailed = []
        for step, admin in enumerate(self.settings.admin_emails, start=3):
            try:
                await ctx.client.enqueue(
                    EMAIL_SEND.name,
                    {"to": admin, "subject": f"eventjobs daily report for {day.isoformat()}",
                     "template": "daily_report", "context": content},
                    # Per run of this job: a retry mails nobody twice, a new trigger mails again.
                    idempotency_key=f"{DAILY_REPORT.name}:{ctx.job_id}:{admin}", parent_id=ctx.job_id,
                )
            except IdempotencyConflict:
                pass  # enqueued by an earlier attempt of this job
            except InvalidJobArguments as exc:
                ctx.log.warning("report not mailed to %r: %s", admin, exc)
                continue
            finally:
                await ctx.progress(step, steps, "mailing the admins")
            mailed.append(admin)
        if not self.settings.admin_emails:
            ctx.log.info("ADMIN_EMAILS is empty: the report is stored, not mailed")
        return {"day": day.isoformat(), "mailed_to": mailed}

    @handles(REAP_DEAD_SERVERS)
    async def reap_dead_servers(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        # Only the servers list: the jobs of a dead worker are recovered when their leases expire (the
        # scheduler's lease sweeper), never because a heartbeat looks old from here.
        removed = await server_queries.delete_dead_servers(ctx.pool, dead_after(self.settings))
        for server in removed:
            ctx.log.info("removed dead server %s", server)
        return {"servers_removed": removed}


def build_handlers(settings: Settings) -> dict[str, Handler]:
    return handlers_on(MaintenanceHandlers(settings))
