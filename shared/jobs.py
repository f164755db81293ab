"""The job model as pure code: states, legal transitions, queue classes. No I/O here."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    SCHEDULED = "scheduled"  # waiting in Postgres for its run_at; the scheduler promotes it
    ENQUEUED = "enqueued"  # committed and (being) published to its service queue
    PROCESSING = "processing"  # claimed by a worker that is running the handler
    RETRYING = "retrying"  # a failed attempt waiting in a retry delay queue
    SUCCEEDED = "succeeded"  # the handler returned; final unless requeued by hand
    FAILED = "failed"  # permanent error or attempts exhausted; a copy sits in jobs.dead
    DELETED = "deleted"  # removed by an operator or by a domain change (event moved, cancelled)
    CANCELLED = "cancelled"  # stopped by an operator (`cancelled_by`); a running handler stops at its holder's
    # next lease renewal, and the job never runs again unless requeued
    AWAITING = "awaiting"  # a continuation waiting in Postgres for its parent job or its batch to finish
    SKIPPED = "skipped"  # a continuation whose parent did not succeed, when it asked for success


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DELETED, JobState.CANCELLED,
                          JobState.SKIPPED})

# Which states a job may move to from each state. PROCESSING -> PROCESSING is a takeover of a job
# whose previous worker died; PROCESSING -> ENQUEUED is a graceful-shutdown or reaper requeue.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.ENQUEUED, JobState.DELETED, JobState.CANCELLED}),
    # -> SCHEDULED: held back by its kind's limit at claim time (shared/limits.py), no attempt counted.
    JobState.ENQUEUED: frozenset({JobState.PROCESSING, JobState.DELETED, JobState.ENQUEUED, JobState.CANCELLED,
                                  JobState.SCHEDULED}),
    JobState.PROCESSING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.RETRYING, JobState.ENQUEUED, JobState.PROCESSING,
         JobState.CANCELLED}
    ),
    JobState.RETRYING: frozenset({JobState.PROCESSING, JobState.ENQUEUED, JobState.DELETED, JobState.CANCELLED,
                                  JobState.SCHEDULED}),
    JobState.SUCCEEDED: frozenset({JobState.ENQUEUED, JobState.DELETED}),
    JobState.FAILED: frozenset({JobState.ENQUEUED, JobState.DELETED}),
    JobState.DELETED: frozenset({JobState.ENQUEUED}),
    JobState.CANCELLED: frozenset({JobState.ENQUEUED, JobState.DELETED}),
    # Promoted by the triggers of 0013_continuations.sql when the parent or the batch finishes.
    JobState.AWAITING: frozenset({JobState.SCHEDULED, JobState.SKIPPED, JobState.DELETED, JobState.CANCELLED}),
    JobState.SKIPPED: frozenset({JobState.ENQUEUED, JobState.DELETED}),
}


def can_transition(source: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[source]


def sources_of(target: JobState) -> list[str]:
    """States a job may be in for a move to `target`; used in SQL `WHERE state = ANY($n)` guards."""
    return sorted(state.value for state, targets in TRANSITIONS.items() if target in targets)


# Operator actions. Requeue never touches a job that a worker is running right now.
REQUEUEABLE = frozenset({JobState.FAILED, JobState.SUCCEEDED, JobState.DELETED, JobState.SCHEDULED,
                         JobState.RETRYING, JobState.CANCELLED, JobState.SKIPPED})
DELETABLE = frozenset({JobState.SCHEDULED, JobState.ENQUEUED, JobState.RETRYING, JobState.FAILED,
                       JobState.SUCCEEDED, JobState.CANCELLED, JobState.AWAITING, JobState.SKIPPED})
# Cancel is the one action that reaches a running job: it ends the holder's lease (see shared/db/job_admin.cancel).
CANCELLABLE = frozenset(state for state, targets in TRANSITIONS.items() if JobState.CANCELLED in targets)


class QueueClass(StrEnum):
    CRITICAL = "critical"
    DEFAULT = "default"
    LOW = "low"

    @property
    def priority(self) -> int:
        return PRIORITIES[self]


PRIORITIES: dict[QueueClass, int] = {QueueClass.CRITICAL: 9, QueueClass.DEFAULT: 5, QueueClass.LOW: 1}
MAX_PRIORITY = 10
