"""`python -m tests.benchmarks.fanout`: one event.reminder fanned out to 5,000 participants, timed from the
enqueue to the last message in an SMTP sink, with the email worker as its own process (concurrency 10).

Prints messages per second and the SMTP connections the sink saw. BENCH_PARTICIPANTS changes the size.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from shared.kinds import platform_registry
from shared.runtime import open_runtime
from tests.support.domain_rows import insert_event, insert_participants
from tests.support.environment import Management, create_template_database, drop_database, test_environment
from tests.support.services import running_services
from tests.support.smtp import running_sink


async def main() -> None:
    participants = int(os.environ.get("BENCH_PARTICIPANTS", "5000"))
    template = await create_template_database()
    try:
        async with test_environment(template, Management()) as env, running_sink() as sink, running_services(
            env, sink.port, names=("email_worker",), worker_concurrency=10,
        ), open_runtime(env.settings(smtp_port=sink.port), platform_registry()) as runtime:
            event_id = await insert_event(runtime.pool, title="Benchmark",
                                          starts_at=datetime.now(UTC) + timedelta(days=2))
            await insert_participants(runtime.pool, event_id, participants)
            started = time.perf_counter()
            await runtime.client.enqueue("event.reminder", {"event_id": str(uuid.UUID(str(event_id)))})
            await sink.wait_for(participants, timeout=1800)
            elapsed = time.perf_counter() - started
    finally:
        await drop_database(template)
    print(f"fan-out to {participants:,} participants: {elapsed:.1f} s, {participants / elapsed:,.0f} messages/s, "
          f"{sink.connections:,} SMTP connections; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
