"""RetryPolicy.decide as a table: Hangfire's AutomaticRetry semantics."""

from __future__ import annotations

import random

import pytest

from shared.retry import GiveUp, Retry, RetryDecision, RetryPolicy, jitter_buckets

HANGFIRE = RetryPolicy(3, (60, 300, 900))


@pytest.mark.parametrize(
    ("policy", "attempt", "permanent", "max_attempts", "decision"),
    [
        (HANGFIRE, 1, False, None, Retry(60)),
        (HANGFIRE, 2, False, None, Retry(300)),
        (HANGFIRE, 3, False, None, GiveUp("attempts exhausted (3 of 3)")),
        (HANGFIRE, 1, True, None, GiveUp("permanent error")),
        (HANGFIRE, 3, False, 5, Retry(900)),  # the job's own max_attempts wins over the policy's
        (HANGFIRE, 4, False, 5, Retry(900)),  # more attempts than delays: the last delay repeats
        (HANGFIRE, 5, False, 5, GiveUp("attempts exhausted (5 of 5)")),
        (HANGFIRE, 1, False, 1, GiveUp("attempts exhausted (1 of 1)")),
        (RetryPolicy(3, (1, 2)), 1, False, None, Retry(1)),
        (RetryPolicy(3, (1, 2)), 2, False, None, Retry(2)),
        (RetryPolicy(1, (5,)), 1, False, None, GiveUp("attempts exhausted (1 of 1)")),
        (RetryPolicy(10, (7,)), 9, False, None, Retry(7)),
    ],
)
def test_decide(
    policy: RetryPolicy, attempt: int, permanent: bool, max_attempts: int | None, decision: RetryDecision
) -> None:
    assert policy.decide(attempt, permanent=permanent, max_attempts=max_attempts) == decision


@pytest.mark.parametrize(
    ("max_attempts", "delays"),
    [(0, (60,)), (3, ()), (3, (0,)), (3, (60, -1))],
)
def test_invalid_policies_are_refused(max_attempts: int, delays: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts, delays)


@pytest.mark.parametrize(
    ("delay", "jitter", "buckets"),
    [
        (60, 0.1, (54, 57, 60, 63, 66)),  # the default: ±10 % in five waves
        (900, 0.1, (810, 855, 900, 945, 990)),
        (60, 0.0, (60,)),
        (1, 0.1, (1,)),  # whole seconds: a 1 s retry has nothing to spread
        (4, 0.5, (2, 3, 4, 5, 6)),
        (1, 0.9, (1, 2)),  # never below one second
    ],
)
def test_jitter_buckets(delay: int, jitter: float, buckets: tuple[int, ...]) -> None:
    assert jitter_buckets(delay, jitter) == buckets


def test_a_jittered_retry_picks_every_bucket_and_only_those() -> None:
    policy = RetryPolicy(3, (60, 300), jitter=0.1)
    rng = random.Random(9)
    seen = {policy.decide(1, permanent=False, rng=rng) for _ in range(500)}
    assert seen == {Retry(delay) for delay in (54, 57, 60, 63, 66)}
    assert policy.queue_delays() == {54, 57, 60, 63, 66, 270, 285, 300, 315, 330}


def test_a_kind_without_its_own_jitter_takes_the_default() -> None:
    assert RetryPolicy(2, (30,)).with_jitter(0.2).jitter == 0.2
    assert RetryPolicy(2, (30,), jitter=0.0).with_jitter(0.2).jitter == 0.0
    with pytest.raises(ValueError):
        RetryPolicy(2, (30,), jitter=1.0)
