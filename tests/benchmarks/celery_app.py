"""The Celery peer: `celery -A tests.benchmarks.celery_app worker`; a no-op task that writes the sink.

Configured as a careful Celery user would run jobs that must not be lost: acks_late, no result backend
(Celery's Postgres result backend is its nearest thing to a history, and costs several times the drain).
"""

from __future__ import annotations

import os

from celery import Celery

from tests.benchmarks.sink import record

QUEUE = "bench"


def make_app(amqp_url: str, *, confirms: bool) -> Celery:
    app = Celery("bench", broker=amqp_url)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # py-amqp publisher confirms: every publish waits for the broker's ack.
        broker_transport_options={"confirm_publish": confirms},
    )
    return app


app = make_app(os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"), confirms=False)


@app.task(name="bench.noop")
def noop(n: int, sent: float | None = None, due: float | None = None) -> None:
    record(n, sent, due)
