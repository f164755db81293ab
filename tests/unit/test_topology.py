"""The RabbitMQ topology is data: names, arguments and bindings asserted without a broker."""

from __future__ import annotations

from shared.jobs import MAX_PRIORITY, QueueClass
from shared.messaging.topology import (
    DEAD_EXCHANGE,
    JOBS_EXCHANGE,
    RETRY_EXCHANGE,
    Exchange,
    build_topology,
    dead_queue,
    delay_key,
    delay_queue,
    work_queue,
)

TOPOLOGY = build_topology(["email", "maintenance", "email"], [900, 60, 300, 60])


def test_names_come_from_small_functions() -> None:
    assert work_queue("email") == "jobs.email"
    assert delay_queue(60) == "jobs.delay.60s"
    assert delay_key(60) == "60s"
    assert dead_queue() == "jobs.dead"


def test_exchanges() -> None:
    assert set(TOPOLOGY.exchanges) == {
        Exchange(JOBS_EXCHANGE, "direct"), Exchange(RETRY_EXCHANGE, "direct"), Exchange(DEAD_EXCHANGE, "fanout"),
    }


def test_one_queue_per_service_and_per_delay_length_plus_the_parking_lot() -> None:
    assert [queue.name for queue in TOPOLOGY.queues] == [
        "jobs.email", "jobs.maintenance", "jobs.delay.60s", "jobs.delay.300s", "jobs.delay.900s", "jobs.dead",
    ]


def test_service_queues_are_priority_queues_that_dead_letter_to_the_parking_lot() -> None:
    queue = TOPOLOGY.queue("jobs.email")
    assert queue.arguments == {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": DEAD_EXCHANGE}
    assert queue.bindings == ((JOBS_EXCHANGE, "email"),)
    assert all(0 < queue_class.priority <= MAX_PRIORITY for queue_class in QueueClass)


def test_delay_queues_have_a_fixed_ttl_and_dead_letter_back_to_jobs() -> None:
    for seconds in (60, 300, 900):
        queue = TOPOLOGY.queue(delay_queue(seconds))
        assert queue.arguments == {"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": JOBS_EXCHANGE}
        # No x-dead-letter-routing-key: the message keeps its CC (the service key) when it expires.
        assert queue.bindings == ((RETRY_EXCHANGE, delay_key(seconds)),)


def test_parking_lot_takes_everything_from_the_dead_exchange() -> None:
    queue = TOPOLOGY.queue(dead_queue())
    assert queue.arguments == {}
    assert queue.bindings == ((DEAD_EXCHANGE, ""),)


def test_quorum_queues_drop_priority_and_dead_letter_at_least_once() -> None:
    topology = build_topology(["email"], [60], "quorum")
    assert topology.queue("jobs.email").arguments == {
        "x-queue-type": "quorum", "x-dead-letter-exchange": "jobs.dead", "x-delivery-limit": 50,
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
    }
    assert topology.queue("jobs.delay.60s").arguments == {
        "x-queue-type": "quorum", "x-message-ttl": 60_000, "x-dead-letter-exchange": "jobs",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
    }
    assert topology.queue("jobs.dead").arguments == {"x-queue-type": "quorum"}
