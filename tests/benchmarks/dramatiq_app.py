"""The Dramatiq peer: `dramatiq tests.benchmarks.dramatiq_app`; a no-op actor that writes the sink."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tests.benchmarks.sink import record

QUEUE = "bench"
ACTOR = "noop"

broker = RabbitmqBroker(url=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, max_retries=0)
def noop(n: int, sent: float | None = None, due: float | None = None) -> None:
    record(n, sent, due)
