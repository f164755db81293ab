"""Messages no worker can act on go to the parking lot with a reason, and the worker goes on."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest

from shared.db import job_admin
from shared.messaging.topology import JOBS_EXCHANGE
from shared.runtime import Runtime
from tests.conftest import StartWorker
from tests.support.broker_probe import DeadLetter, dead_letters
from tests.support.environment import TestEnvironment
from tests.support.kinds import TEST_SERVICE
from tests.support.waiting import eventually

pytestmark = pytest.mark.both_queue_types  # delivery, retries, parking and crashes on either


async def publish_raw(amqp_url: str, body: bytes) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(JOBS_EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(body), routing_key=TEST_SERVICE, mandatory=True)
    finally:
        await connection.close()


async def test_garbage_and_unknown_kinds_are_parked_and_the_worker_serves_the_next_job(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    garbage = b"\x00\xffthis is not a job"
    unknown = json.dumps({"job_id": str(uuid.uuid4()), "kind": "test.does_not_exist", "attempt": 0}).encode()
    await publish_raw(env.amqp_url, garbage)
    await publish_raw(env.amqp_url, unknown)

    async def both_parked() -> list[DeadLetter]:
        letters = await dead_letters(env.amqp_url)
        return letters if len(letters) >= 2 else []

    letters = await eventually(both_parked, what="two messages in jobs.dead")
    reasons = {letter.body: letter.reason for letter in letters}
    assert set(reasons) == {garbage, unknown}
    assert reasons[garbage].startswith("undecodable message body")
    assert reasons[unknown] == "unknown job kind 'test.does_not_exist' for service 'test'"

    job = await runtime.client.enqueue("test.noop", {"n": 1})
    assert job is not None

    async def succeeded() -> bool:
        return await job_admin.job_state(runtime.pool, job.id) == "succeeded"

    await eventually(succeeded, what="the next job to succeed after the poison")
    assert len(await dead_letters(env.amqp_url)) == 2  # parked once each, not redelivered in a loop


async def test_a_message_for_a_job_that_does_not_exist_is_parked(
    env: TestEnvironment, runtime: Runtime, start_worker: StartWorker
) -> None:
    await start_worker()
    missing = json.dumps({"job_id": str(uuid.uuid4()), "kind": "test.noop", "attempt": 0}).encode()
    await publish_raw(env.amqp_url, missing)
    letters = await eventually(lambda: dead_letters(env.amqp_url), what="the message in jobs.dead")
    assert letters[0].body == missing
    assert letters[0].reason.endswith("does not exist")
