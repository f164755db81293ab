"""ProgressReporter: a write at most every interval, the latest report kept for the final flush."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared import progress as progress_module
from shared.progress import ProgressReporter


class CountingPool:
    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    async def execute(self, _sql: str, *args: Any) -> str:
        self.writes.append(args[3:])
        return "UPDATE 1"


async def test_reports_in_a_burst_are_stored_once_per_interval_and_the_last_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    pool = CountingPool()
    reporter = ProgressReporter(pool, uuid.uuid4(), "w", 1, interval_seconds=0.5)  # type: ignore[arg-type]
    for done in range(1, 1001):  # a thousand items within 0.2 s
        clock[0] += 0.0002
        await reporter.report(done, 1000, f"item {done}")
    assert pool.writes == [(1, 1000, "item 1")]
    clock[0] += 0.5
    await reporter.report(1001, 1001, "last")
    await reporter.flush()  # nothing left: the last report was stored at once
    assert pool.writes == [(1, 1000, "item 1"), (1001, 1001, "last")]
    await reporter.report(1002, None, None)
    await reporter.flush()  # the handler ended within the interval: its last report is stored anyway
    assert pool.writes[-1] == (1002, None, None)


async def test_negative_counts_are_refused() -> None:
    reporter = ProgressReporter(CountingPool(), uuid.uuid4(), "w", 1, interval_seconds=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await reporter.report(-1, 10)
