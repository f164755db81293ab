"""Handlers of the maintenance service's job kinds: archiving, retention, the daily report, the reaper."""

from __future__ import annotations

from typing import Any

from services.maintenance_worker.report import gather_report, report_window
from shared.client import IdempotencyConflict
from shared.db import maintenance, reports
from shared.db.pool import acquire
from shared.kinds import NoArgs
from shared.lifecycle import dead_after
from shared.messaging.broker import BrokerUnavailable
from shared.messaging.consumer import Handler, JobContext
from shared.messaging.envelope import Envelope
from shared.registry import InvalidJobArguments
from shared.settings import Settings


class MaintenanceHandlers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def handlers(self) -> dict[str, Handler]:
        return {
            "maintenance.cleanup_expired_events": self.cleanup_expired_events,
            "maintenance.cleanup_old_logs": self.cleanup_old_logs,
            "maintenance.daily_report": self.daily_report,
            "maintenance.reap_dead_servers": self.reap_dead_servers,
        }

    async def cleanup_expired_events(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        days = self.settings.event_archive_days
        archived = await maintenance.archive_ended_events(ctx.pool, days)
        ctx.log.info("archived %d events that ended more than %d days ago", len(archived), days)
        return {"archived": len(archived)}

    async def cleanup_old_logs(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        logs = await maintenance.delete_old_logs(ctx.pool, self.settings.log_retention_days)
        jobs = await maintenance.delete_finished_jobs(ctx.pool, self.settings.job_retention_days)
        ctx.log.info("deleted %d log lines older than %d days and %d succeeded/deleted jobs older than %d days",
                     logs, self.settings.log_retention_days, jobs, self.settings.job_retention_days)
        return {"log_lines_deleted": logs, "jobs_deleted": jobs}

    async def daily_report(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        # The day is fixed by when the job was meant to run, so a late or retried run reports the same day.
        moment = await reports.job_fire_time(ctx.pool, ctx.job_id)
        assert moment is not None, "a running job has a row"
        timezone = self.settings.scheduler_timezone
        day, start, end = report_window(moment, timezone)
        content = await gather_report(ctx.pool, day, start, end, timezone)
        await reports.store_report(ctx.pool, day, content, ctx.job_id)
        ctx.log.info("report for %s stored", day.isoformat())
        mailed = []
        for admin in self.settings.admin_emails:
            try:
                await ctx.client.enqueue(
                    "email.send",
                    {"to": admin, "subject": f"eventjobs daily report for {day.isoformat()}",
                     "template": "daily_report", "context": content},
                    # Per run of this job: a retry mails nobody twice, a new trigger mails again.
                    idempotency_key=f"maintenance.daily_report:{ctx.job_id}:{admin}", parent_id=ctx.job_id,
                )
            except IdempotencyConflict:
                pass  # enqueued by an earlier attempt of this job
            except InvalidJobArguments as exc:
                ctx.log.warning("report not mailed to %r: %s", admin, exc)
                continue
            mailed.append(admin)
        if not self.settings.admin_emails:
            ctx.log.info("ADMIN_EMAILS is empty: the report is stored, not mailed")
        return {"day": day.isoformat(), "mailed_to": mailed}

    async def reap_dead_servers(self, ctx: JobContext, args: NoArgs) -> dict[str, Any]:
        threshold = dead_after(self.settings)
        async with acquire(ctx.pool) as connection, connection.transaction():
            requeued = await maintenance.requeue_orphaned_jobs(connection, threshold)
            failed = await maintenance.fail_orphaned_jobs(connection, threshold)
            removed = await maintenance.delete_dead_servers(connection, threshold)
        # After commit: a lost publish leaves the rows for the outbox relay, never loses them.
        await ctx.client.publish(list(requeued))
        for row in failed:
            try:
                await ctx.client.broker.publish_dead(
                    Envelope(row["id"], row["kind"], row["attempt"]).encode(),
                    "attempts exhausted: its server stopped heartbeating",
                    {"job_id": str(row["id"]), "kind": row["kind"], "service": row["service"]},
                )
            except BrokerUnavailable:
                ctx.log.warning("could not copy failed job %s to the parking lot", row["id"])
        for server in removed:
            ctx.log.info("removed dead server %s", server)
        for row in requeued:
            ctx.log.info("requeued job %s (%s) from a dead server", row["id"], row["kind"])
        for row in failed:
            ctx.log.warning("job %s (%s) failed: its server died during the last attempt", row["id"], row["kind"])
        return {"requeued": len(requeued), "failed": len(failed), "servers_removed": removed}


def build_handlers(settings: Settings) -> dict[str, Handler]:
    return MaintenanceHandlers(settings).handlers()
