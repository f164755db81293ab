"""What handlers observed: every run of a `test.observed` job writes when it started and how it ended.

The lines go to a file named in the job's arguments (O_APPEND, one short line per write, so processes can
share it), so the counts hold whatever happened to Postgres or RabbitMQ meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


def record(log: str, job_id: str, attempt: int, event: str) -> None:
    line = json.dumps({"job": job_id, "attempt": attempt, "pid": os.getpid(), "event": event, "t": time.time()})
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Run:
    job: str
    pid: int
    attempt: int
    started: float
    ended: float  # when it completed, was cancelled, or its process was killed or frozen
    completed: bool


@dataclass(frozen=True)
class Counts:
    runs: int
    completed_jobs: int  # jobs with at least one completed run
    overlapping: int  # pairs of runs of one job that were executing at the same moment
    duplicates: int  # completed runs beyond the first of each job (at-least-once at work)

    def report(self, name: str, *, lost: int) -> str:
        return (f"{name}: lost {lost}, overlapping {self.overlapping}, duplicates after completion "
                f"{self.duplicates} (runs {self.runs}, jobs completed {self.completed_jobs})")


def runs(log: Path, *, killed: dict[int, float] | None = None,
         frozen: dict[int, tuple[float, float]] | None = None) -> list[Run]:
    """The runs in `log`. A run of a killed pid without an outcome ended at the kill. A run of a pid frozen
    from t0 to t1 that was cancelled after waking did nothing after t0 (it was waiting when it was stopped
    and was cancelled on waking, before any of its code ran): it counts as ended at t0."""
    starts: dict[tuple[str, int, int], float] = {}
    outcomes: dict[tuple[str, int, int], tuple[str, float]] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        key = (entry["job"], entry["pid"], entry["attempt"])
        if entry["event"] == "start":
            starts[key] = entry["t"]
        else:
            outcomes[key] = (entry["event"], entry["t"])
    result = []
    for key, started in starts.items():
        event, ended = outcomes.get(key, ("lost", (killed or {}).get(key[1], float("inf"))))
        stopped = (frozen or {}).get(key[1])
        if stopped is not None and event == "cancelled" and ended >= stopped[1]:
            ended = max(started, stopped[0])
        result.append(Run(key[0], key[1], key[2], started, ended, event == "end"))
    return result


def count(all_runs: list[Run]) -> Counts:
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in all_runs:
        by_job[run.job].append(run)
    overlapping = 0
    for job_runs in by_job.values():
        ordered = sorted(job_runs, key=lambda run: run.started)
        for index, first in enumerate(ordered):
            overlapping += sum(1 for later in ordered[index + 1:] if later.started < first.ended)
    completed = [run for run in all_runs if run.completed]
    completed_jobs = len({run.job for run in completed})
    return Counts(len(all_runs), completed_jobs, overlapping, len(completed) - completed_jobs)
