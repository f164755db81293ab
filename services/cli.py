"""`eventjobs`: the operator's command line, with the habits of Celery's `inspect` and `purge`.

    eventjobs migrate                                  apply the database migrations
    eventjobs run SERVICE|all                          run one service (api, scheduler, email-worker,
                                                       maintenance-worker) or all four until Ctrl-C
    eventjobs enqueue KIND --args JSON [--delay S]     enqueue a job; prints it as JSON
    eventjobs status [--json]                          jobs per state, queues, servers
    eventjobs requeue|delete --state failed [--kind K] requeue or delete matching jobs
    eventjobs parking-lot list [--count N]             the parked messages with their reasons
    eventjobs parking-lot purge (--all | --older-than S | --id ID...) [--yes]

The container image's entry point (docker/entrypoint.py) hands every command but its own (a bare service
name, `healthcheck`) to this one, so `eventjobs status` works inside a container too. Settings come from
the environment, as for the services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.kinds import platform_registry
from shared.settings import Settings, load_settings

# service name (as in the image, compose and Kubernetes) → module run with -m
SERVICES: dict[str, str] = {
    "api": "services.api",
    "scheduler": "services.scheduler",
    "email-worker": "services.email_worker",
    "maintenance-worker": "services.maintenance_worker",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="eventjobs", description="Operate eventjobs: run, enqueue, inspect, purge.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="apply the database migrations and exit")
    run = commands.add_parser("run", help="run one service, or all four until Ctrl-C")
    run.add_argument("service", choices=[*SERVICES, "all"])
    enqueue = commands.add_parser("enqueue", help="enqueue a job (see GET /api/kinds for the kinds)")
    enqueue.add_argument("kind")
    enqueue.add_argument("--args", default="{}", help="the arguments as a JSON object (default {})")
    enqueue.add_argument("--delay", type=float, default=None, metavar="SECONDS", help="run no earlier than this")
    enqueue.add_argument("--queue", choices=["critical", "default", "low"], default=None)
    status = commands.add_parser("status", help="jobs per state, RabbitMQ queues and server processes")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    for name, verb in (("requeue", "requeue"), ("delete", "delete")):
        bulk = commands.add_parser(name, help=f"{verb} every job in a state (optionally of one kind)")
        bulk.add_argument("--state", required=True, help="failed, succeeded, deleted, scheduled, ...")
        bulk.add_argument("--kind", default=None)
        bulk.add_argument("--limit", type=int, default=10_000)
    lot = commands.add_parser("parking-lot", help="the parked messages (jobs.dead)")
    lot_commands = lot.add_subparsers(dest="lot_command", required=True, metavar="ACTION")
    listing = lot_commands.add_parser("list", help="the parked messages at the head of the queue")
    listing.add_argument("--count", type=int, default=20)
    purge = lot_commands.add_parser("purge", help="remove parked messages (their jobs are not changed)")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every parked message")
    which.add_argument("--older-than", type=int, metavar="SECONDS", help="those parked longer ago than this")
    which.add_argument("--id", action="append", metavar="ID", help="a message id (from `list`); repeatable")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return top


@asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Any]:
    from shared.runtime import open_runtime

    async with open_runtime(settings, platform_registry(), pool_size=2, connection_name="eventjobs-cli") as opened:
        yield opened


def fail(message: str) -> None:
    print(f"eventjobs: {message}", file=sys.stderr)
    raise SystemExit(2)


async def enqueue(settings: Settings, options: argparse.Namespace) -> None:
    from shared.registry import InvalidJobArguments, UnknownJobKind

    try:
        args = json.loads(options.args)
    except ValueError as exc:
        fail(f"--args is not JSON: {exc}")
    if not isinstance(args, dict):
        fail("--args must be a JSON object, like '{\"email\": \"ada@example.com\"}'")
    async with runtime(settings) as opened:
        try:
            job = await opened.client.enqueue(options.kind, args, delay=options.delay, queue=options.queue)
        except UnknownJobKind:
            kinds = ", ".join(sorted(kind.name for kind in opened.registry))
            fail(f"unknown job kind {options.kind!r}; one of: {kinds}")
        except InvalidJobArguments as exc:
            fail("; ".join(f"args.{item['field']}: {item['message']}" for item in exc.details) or str(exc))
        assert job is not None
        print(json.dumps({"id": str(job.id), "kind": options.kind, "state": job.state.value}))


async def status(settings: Settings, options: argparse.Namespace) -> None:
    from shared.db import job_admin, servers
    from shared.lifecycle import dead_after
    from shared.rabbitmq_management import Management, ManagementUnavailable

    async with runtime(settings) as opened:
        counts = {state.value: n for state, n in (await job_admin.counts_by_state(opened.pool)).items()}
        rows = await servers.list_servers(opened.pool, dead_after(settings))
    try:
        queues: list[dict[str, Any]] | None = [
            {"name": q.name, "messages": q.messages, "ready": q.ready, "consumers": q.consumers}
            for q in await Management(settings).queues()]
    except ManagementUnavailable:
        queues = None
    processes = [{"service": row["service"], "host": row["host"], "pid": row["pid"], "dead": row["dead"],
                  "last_heartbeat": row["last_heartbeat"].isoformat()} for row in rows]
    if options.json:
        print(json.dumps({"jobs": counts, "queues": queues, "servers": processes}, indent=2))
        return
    print("jobs     " + "  ".join(f"{state} {count}" for state, count in counts.items()))
    if queues is None:
        print("queues   (RabbitMQ management API unavailable)")
    for queue in queues or []:
        print(f"queue    {queue['name']:<22} {queue['messages']:>7} messages {queue['consumers']:>3} consumers")
    for process in processes:
        print(f"server   {process['service']:<12} {process['host']}:{process['pid']}"
              f"{'  DEAD' if process['dead'] else ''}  last heartbeat {process['last_heartbeat']}")


async def bulk(settings: Settings, options: argparse.Namespace) -> None:
    from shared import job_actions
    from shared.db.job_admin import JobFilter
    from shared.jobs import JobState

    try:
        state = JobState(options.state)
    except ValueError:
        fail(f"--state must be one of {', '.join(state.value for state in JobState)}")
    job_filter = JobFilter(state=state, kind=options.kind)
    async with runtime(settings) as opened:
        run = job_actions.requeue_matching if options.command == "requeue" else job_actions.delete_matching
        result = await run(opened, job_filter, options.limit, reason=f"{options.command}d from the command line")
    print(json.dumps({"changed": len(result.changed), "skipped": result.skipped}))


async def parking_lot(settings: Settings, options: argparse.Namespace) -> None:
    from shared import parking_lot as lot
    from shared.rabbitmq_management import Management, ManagementUnavailable

    if options.lot_command == "list":
        try:
            parked = await Management(settings).peek_dead(options.count)
        except ManagementUnavailable as exc:
            fail(str(exc))
        for message in parked:
            print(json.dumps({"id": message.id, "parked_at": message.parked_at.isoformat() if message.parked_at
                              else None, "job_id": message.job_id, "kind": message.kind, "reason": message.reason}))
        return
    older = (datetime.now(UTC) - timedelta(seconds=options.older_than)) if options.older_than is not None else None
    async with runtime(settings) as opened:
        removed = await lot.purge(opened.broker, every=options.all, ids=options.id or (), older_than=older,
                                  quorum=settings.queue_type == "quorum")
    print(json.dumps({"removed": removed}))


def confirmed(options: argparse.Namespace) -> bool:
    """A purge asks first (before any connection is opened), unless --yes."""
    what = ("every parked message" if options.all else f"the parked messages older than {options.older_than} s"
            if options.older_than is not None else f"{len(options.id)} parked message(s)")
    if options.yes:
        return True
    if not sys.stdin.isatty():
        fail(f"purging {what} needs --yes when there is no terminal to confirm on")
    if input(f"Remove {what}? Their jobs are not changed. [y/N] ").strip().lower() in ("y", "yes"):
        return True
    print("nothing removed")
    return False


def run_services(name: str) -> None:
    if name != "all":
        os.execv(sys.executable, [sys.executable, "-m", SERVICES[name]])
    processes = [subprocess.Popen([sys.executable, "-m", module]) for module in SERVICES.values()]

    def stop(*_: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(process.poll() is None for process in processes):
            try:
                processes[0].wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        pass
    stop()
    codes = [process.wait() for process in processes]
    raise SystemExit(max(abs(code) for code in codes) if any(codes) else 0)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) == 1 and arguments[0] in SERVICES:
        arguments = ["run", arguments[0]]  # the image's habit: `eventjobs api`
    options = parser().parse_args(arguments)
    if options.command == "run":
        run_services(options.service)
        return
    settings = load_settings()
    if options.command == "migrate":
        from shared.db.migrate import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print(json.dumps({"applied": applied}))
        return
    if options.command == "parking-lot" and options.lot_command == "purge" and not confirmed(options):
        return
    command = {"enqueue": enqueue, "status": status, "requeue": bulk, "delete": bulk,
               "parking-lot": parking_lot}[options.command]
    asyncio.run(command(settings, options))


if __name__ == "__main__":
    main()
