"""RetryPolicy.decide as a table: Hangfire's AutomaticRetry semantics."""

from __future__ import annotations

import pytest

from shared.retry import GiveUp, Retry, RetryDecision, RetryPolicy

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
