"""A job kind added through its declaration alone (the README's "Add a job kind" SMS example): the api
validates it, the event schedule plans it, a move deletes it, the broker routes it to its service's queue,
a worker runs it; and a worker whose kinds and handlers do not meet refuses to start, naming the kind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest
from pydantic import Field

from shared.handler_api import JobContext, PermanentError, handlers_on, handles
from shared.jobs import QueueClass
from shared.kinds import PLATFORM_KINDS, Args
from shared.registry import HandlerMismatch, JobKind, Registry
from shared.worker import run_worker
from tests.conftest import StartWorker
from tests.support.api_probe import platform_api, queue_depth
from tests.support.environment import TestEnvironment
from tests.support.waiting import eventually

SMS_SERVICE = "sms"


class SmsArgs(Args):
    event_id: str
    phone: Annotated[str, Field(pattern=r"^\+[0-9]{6,15}$")] = "+4915112345678"
    starts_at: datetime | None = None
    schedule_revision: int | None = None


# The whole declaration: name, arguments, service (its queue is jobs.sms), queue class, timeout, and its
# place in every event's schedule.
SMS_REMINDER = JobKind("sms.reminder", SmsArgs, SMS_SERVICE, QueueClass.DEFAULT, timeout_seconds=30,
                       before_event=timedelta(hours=2))
SENT: list[str] = []


class SmsHandlers:
    @handles(SMS_REMINDER)
    async def send_sms(self, ctx: JobContext, args: SmsArgs) -> dict[str, str]:
        if args.phone.endswith("0000"):
            raise PermanentError("that number does not take text messages")
        SENT.append(args.phone)
        return {"to": args.phone}


def registry() -> Registry:
    return Registry((*PLATFORM_KINDS, SMS_REMINDER))


async def test_a_declared_kind_is_validated_scheduled_routed_and_run(
    env: TestEnvironment, start_worker: StartWorker
) -> None:
    async with platform_api(env, registry=registry()) as api:
        kinds = {kind["kind"]: kind for kind in (await (await api.get("/api/kinds")).json())["kinds"]}
        assert kinds["sms.reminder"]["rabbitmq_queue"] == "jobs.sms"
        document = await (await api.get("/api/openapi.json")).json()
        schemas = document["components"]["schemas"]
        assert "sms.reminder" in schemas["JobRequest"]["properties"]["kind"]["enum"]
        assert "enum" not in schemas["JobOut"]["properties"]["kind"]  # a job of a since-removed kind still shows

        refused = await api.post("/api/jobs", json={"kind": "sms.reminder", "args": {"event_id": "e", "phone": "12"}})
        assert refused.status == 422
        assert (await refused.json())["error"]["details"][0]["field"] == "args.phone"

        # The event schedule reads the declaration: an event in three hours gets its SMS two hours ahead ...
        starts_at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
        created = await api.post("/api/events", json={"title": "Launch", "starts_at": starts_at.isoformat()})
        assert created.status == 201, await created.text()
        event = await created.json()
        planned = {job["kind"]: job for job in event["scheduled_jobs"]}
        assert datetime.fromisoformat(planned["sms.reminder"]["run_at"]) == starts_at - timedelta(hours=2)
        # ... and a move deletes it with the event's other pending jobs, then plans it again.
        moved = await api.patch(f"/api/events/{event['id']}",
                                json={"starts_at": (starts_at + timedelta(days=1)).isoformat()})
        assert moved.status == 200, await moved.text()
        old = await (await api.get(f"/api/jobs/{planned['sms.reminder']['id']}")).json()
        assert old["state"] == "deleted"

        accepted = await api.post("/api/jobs", json={"kind": "sms.reminder",
                                                     "args": {"event_id": event["id"], "phone": "+4915199999999"}})
        assert accepted.status == 202, await accepted.text()
        job = await accepted.json()
        assert job["queue"] == "default"
        assert await eventually(lambda: _depth(env), what="the job to wait in jobs.sms") == 1

        await start_worker(registry=registry(), service=SMS_SERVICE, handlers=handlers_on(SmsHandlers()))

        async def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = await (await api.get(f"/api/jobs/{job['id']}")).json()
            return body if body["state"] == "succeeded" else None

        done = await eventually(finished, what="the SMS job to succeed")
        assert done["result"] == {"to": "+4915199999999"}
        assert "+4915199999999" in SENT


async def _depth(env: TestEnvironment) -> int:
    return await queue_depth(env, SMS_SERVICE)


async def test_a_worker_refuses_to_start_when_a_kind_of_its_service_has_no_handler(env: TestEnvironment) -> None:
    with pytest.raises(HandlerMismatch, match=r"job kind 'sms.reminder' of service 'sms' has no handler"):
        await asyncio.wait_for(run_worker(env.settings(), asyncio.Event(), service=SMS_SERVICE,
                                          registry=registry(), handlers={}, default_concurrency=1), 10)
    # A handler for a kind that is not declared, or that belongs to another service, is refused too.
    with pytest.raises(HandlerMismatch, match=r"is for job kind 'sms.reminder', which is not declared"):
        await run_worker(env.settings(), asyncio.Event(), service=SMS_SERVICE, registry=Registry(),
                         handlers=handlers_on(SmsHandlers()), default_concurrency=1)
    with pytest.raises(HandlerMismatch, match=r"of service 'sms', not 'email'"):
        await run_worker(env.settings(), asyncio.Event(), service="email", registry=registry(),
                         handlers=handlers_on(SmsHandlers()), default_concurrency=1)


def test_a_worker_process_missing_a_handler_exits_with_status_2_naming_the_kind(env: TestEnvironment) -> None:
    """Through the services' own entry point (run_service), as an operator would see it."""
    script = (
        "from shared.lifecycle import run_service\n"
        "from shared.worker import run_worker\n"
        "from tests.integration.test_declare_kind import SMS_SERVICE, registry\n"
        "async def main(settings, stop):\n"
        "    await run_worker(settings, stop, service=SMS_SERVICE, registry=registry(), handlers={},\n"
        "                     default_concurrency=1)\n"
        "run_service('sms-worker', main)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env.process_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr + result.stdout
    assert "sms.reminder" in result.stderr + result.stdout
