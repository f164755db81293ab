"""Progress of a running job: reported by the handler, seen live in the API and on the dashboard."""

from __future__ import annotations

import uuid
from typing import Any

from shared.jobs import QueueClass
from shared.messaging.consumer import JobContext
from shared.registry import JobKind
from shared.runtime import open_runtime
from shared.settings import Settings
from tests.conftest import StartWorker
from tests.support.kinds import TEST_HANDLERS, TEST_SERVICE, GateArgs, gate, test_registry
from tests.support.live_api import browser_session, running_api
from tests.support.waiting import eventually


async def halfway_then_gate(ctx: JobContext, args: GateArgs) -> None:
    """Ten items: five done at once, then wait for the test, then the rest."""
    for done in range(1, 6):
        await ctx.progress(done, 10, f"item {done}")
    await gate(args.gate).wait()
    for done in range(6, 11):
        await ctx.progress(done, 10, f"item {done}")


REGISTRY = test_registry(JobKind("test.progress", GateArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=60))
HANDLERS = {**TEST_HANDLERS, "test.progress": halfway_then_gate}


async def test_progress_is_stored_at_most_every_interval_and_shown_live(
    settings: Settings, start_worker: StartWorker
) -> None:
    await start_worker(registry=REGISTRY, handlers=HANDLERS, progress_interval_ms=300)
    name = f"progress-{uuid.uuid4().hex[:8]}"
    async with open_runtime(settings, REGISTRY) as runtime:  # a client that knows the kind
        job = await runtime.client.enqueue("test.progress", {"gate": name})
    assert job is not None
    async with running_api(settings, REGISTRY) as port, browser_session() as browser:
        base = f"http://127.0.0.1:{port}"

        async def api_progress() -> dict[str, Any] | None:
            async with browser.get(f"{base}/api/jobs/{job.id}") as response:
                body: dict[str, Any] = await response.json()
            return body if body["progress_done"] is not None else None

        # Five reports in a burst: the first is stored at once, the rest wait for the interval (or the end).
        first = await eventually(api_progress, what="the first progress report")
        assert (first["progress_done"], first["progress_total"], first["progress_message"]) == (1, 10, "item 1")
        async with browser.get(f"{base}/jobs/job/{job.id}") as response:
            html = await response.text()
        assert 'id="progress-bar" max="10" value="1"' in html and "1 of 10 (10 %): item 1" in html
        async with browser.get(f"{base}/jobs/job/{job.id}/state.json") as response:
            live = await response.json()
        assert live["state"] == "processing" and live["progress"]["text"] == "1 of 10 (10 %): item 1"

        gate(name).set()

        async def finished() -> dict[str, Any] | None:
            body = await api_progress()
            return body if body is not None and body["state"] == "succeeded" else None

        done = await eventually(finished, what="the job to succeed")
        assert (done["progress_done"], done["progress_total"], done["progress_message"]) == (10, 10, "item 10")
