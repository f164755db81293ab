"""The state machine as a table: which moves are legal, and the SQL guards derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.jobs import FINAL_STATES, PRIORITIES, TRANSITIONS, JobState, QueueClass, can_transition, sources_of

S = JobState

LEGAL = [
    (S.SCHEDULED, S.ENQUEUED),
    (S.SCHEDULED, S.DELETED),
    (S.ENQUEUED, S.PROCESSING),
    (S.ENQUEUED, S.DELETED),
    (S.PROCESSING, S.SUCCEEDED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.RETRYING),
    (S.PROCESSING, S.ENQUEUED),  # graceful shutdown hands the job back
    (S.PROCESSING, S.PROCESSING),  # takeover from a dead worker
    (S.RETRYING, S.PROCESSING),
    (S.FAILED, S.ENQUEUED),  # operator requeue
    (S.SUCCEEDED, S.ENQUEUED),
    (S.DELETED, S.ENQUEUED),
    (S.SCHEDULED, S.CANCELLED),  # operator cancel, of waiting jobs ...
    (S.ENQUEUED, S.CANCELLED),
    (S.RETRYING, S.CANCELLED),
    (S.PROCESSING, S.CANCELLED),  # ... and of a running one (its lease ends with it)
    (S.CANCELLED, S.ENQUEUED),  # requeue
    (S.CANCELLED, S.DELETED),
    (S.ENQUEUED, S.SCHEDULED),  # held back by its kind's limit, no attempt counted
    (S.RETRYING, S.SCHEDULED),
    (S.AWAITING, S.SCHEDULED),  # its parent (or batch) finished: due now, through the scheduler
    (S.AWAITING, S.SKIPPED),  # its parent did not succeed
    (S.SKIPPED, S.ENQUEUED),  # requeue
]

ILLEGAL = [
    (S.SCHEDULED, S.PROCESSING),  # a delayed job is promoted before it runs
    (S.SCHEDULED, S.SUCCEEDED),
    (S.ENQUEUED, S.SUCCEEDED),  # nothing finishes without being processed
    (S.ENQUEUED, S.FAILED),
    (S.RETRYING, S.SUCCEEDED),
    (S.PROCESSING, S.DELETED),  # a running job is not deleted under its worker
    (S.SUCCEEDED, S.PROCESSING),  # a redelivered message of a finished job is skipped
    (S.FAILED, S.PROCESSING),
    (S.DELETED, S.PROCESSING),
    (S.SUCCEEDED, S.FAILED),
    (S.CANCELLED, S.PROCESSING),  # a copy of a cancelled job's message is dropped, never run
    (S.SUCCEEDED, S.CANCELLED),  # finished jobs have nothing left to cancel
    (S.FAILED, S.CANCELLED),
    (S.AWAITING, S.PROCESSING),  # a continuation never runs before its parent finished
    (S.AWAITING, S.ENQUEUED),
]


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_legal_transitions(source: JobState, target: JobState) -> None:
    assert can_transition(source, target)


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_illegal_transitions(source: JobState, target: JobState) -> None:
    assert not can_transition(source, target)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_final_states_only_leave_by_operator_action() -> None:
    for state in FINAL_STATES:
        assert TRANSITIONS[state] <= {S.ENQUEUED, S.DELETED}


@pytest.mark.parametrize(
    ("target", "sources"),
    [
        (S.PROCESSING, ["enqueued", "processing", "retrying"]),
        (S.ENQUEUED, ["cancelled", "deleted", "enqueued", "failed", "processing", "retrying", "scheduled",
                      "skipped", "succeeded"]),
        (S.CANCELLED, ["awaiting", "enqueued", "processing", "retrying", "scheduled"]),
        (S.SUCCEEDED, ["processing"]),
        (S.SCHEDULED, ["awaiting", "enqueued", "retrying"]),  # a continuation due; held back by a limit
    ],
)
def test_sources_of_is_the_sql_guard(target: JobState, sources: list[str]) -> None:
    assert sources_of(target) == sources


def test_queue_classes_map_to_ordered_priorities() -> None:
    assert QueueClass.CRITICAL.priority > QueueClass.DEFAULT.priority > QueueClass.LOW.priority > 0
    assert set(PRIORITIES) == set(QueueClass)


def test_the_sql_final_states_are_the_state_machines() -> None:
    sql = (Path(__file__).parents[2] / "shared/db/migrations/0013_continuations.sql").read_text()
    listed = sql.split("SELECT state IN (", 1)[1].split(")", 1)[0]
    assert {name.strip(" '") for name in listed.split(",")} == {state.value for state in FINAL_STATES}
