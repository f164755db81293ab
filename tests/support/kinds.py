"""Job kinds that exist only in tests, served by the `test` service."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from shared.handler_api import Handler, JobContext, PermanentError, handlers_on, handles
from shared.jobs import QueueClass
from shared.kinds import Args
from shared.registry import JobKind, Registry
from shared.retry import RetryPolicy
from tests.support.observed import record

TEST_SERVICE = "test"


class NoopArgs(Args):
    n: int = 0


class FlakyArgs(Args):
    failures: int  # attempts that fail before one succeeds


class SleepArgs(Args):
    seconds: float


class SwitchArgs(Args):
    switch: str  # fails while this name is in BROKEN


class LogArgs(Args):
    message: str


class ObservedArgs(Args):
    seconds: float
    log: str  # the file its runs are recorded in (tests.support.observed)


class GateArgs(Args):
    gate: str  # runs until the test opens this gate


BROKEN: set[str] = set()  # in-process switches for test.until_fixed
GATES: dict[str, asyncio.Event] = {}  # in-process gates for test.gate


def gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


NOOP = JobKind("test.noop", NoopArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30)
FLAKY = JobKind("test.flaky", FlakyArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30)
SLEEP = JobKind("test.sleep", SleepArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=2)
UNTIL_FIXED = JobKind("test.until_fixed", SwitchArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30)
PERMANENT = JobKind("test.permanent", NoopArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=30)
LOG = JobKind("test.log", LogArgs, TEST_SERVICE, QueueClass.LOW, timeout_seconds=30)
# no jitter: the fault tests time this retry to the second
SLOW_RETRY = JobKind("test.slow_retry", NoopArgs, TEST_SERVICE, QueueClass.DEFAULT,
                     retry=RetryPolicy(2, (30,), jitter=0.0), timeout_seconds=30)
GATE = JobKind("test.gate", GateArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=60)
OBSERVED = JobKind("test.observed", ObservedArgs, TEST_SERVICE, QueueClass.DEFAULT, timeout_seconds=120)
TEST_KINDS = (NOOP, FLAKY, SLEEP, UNTIL_FIXED, PERMANENT, LOG, SLOW_RETRY, GATE, OBSERVED)


def test_registry(*extra: JobKind) -> Registry:
    return Registry((*TEST_KINDS, *extra))


@handles(NOOP)
async def noop(ctx: JobContext, args: NoopArgs) -> dict[str, Any]:
    return {"n": args.n}


@handles(FLAKY)
async def flaky(ctx: JobContext, args: FlakyArgs) -> str:
    if ctx.attempt <= args.failures:
        raise RuntimeError(f"planned failure {ctx.attempt} of {args.failures}")
    return f"succeeded at attempt {ctx.attempt}"


@handles(SLEEP)
async def sleep(ctx: JobContext, args: SleepArgs) -> None:
    await asyncio.sleep(args.seconds)


@handles(UNTIL_FIXED)
async def until_fixed(ctx: JobContext, args: SwitchArgs) -> None:
    if args.switch in BROKEN:
        raise RuntimeError(f"switch {args.switch} is broken")


@handles(PERMANENT)
async def permanent(ctx: JobContext, args: NoopArgs) -> None:
    raise PermanentError("this can never work")


@handles(LOG)
async def log_line(ctx: JobContext, args: LogArgs) -> None:
    ctx.log.info("handler says %s", args.message)


@handles(GATE)
async def wait_for_gate(ctx: JobContext, args: GateArgs) -> None:
    await gate(args.gate).wait()


@handles(OBSERVED)
async def observed(ctx: JobContext, args: ObservedArgs) -> None:
    record(args.log, str(ctx.job_id), ctx.attempt, "start")
    outcome = "cancelled"
    try:
        await asyncio.sleep(args.seconds)
        outcome = "end"
    finally:
        record(args.log, str(ctx.job_id), ctx.attempt, outcome)


@handles(SLOW_RETRY)
async def always_fail(ctx: JobContext, args: NoopArgs) -> None:
    raise RuntimeError("always fails")


TEST_HANDLERS: dict[str, Handler] = handlers_on(sys.modules[__name__])


test_registry.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test
