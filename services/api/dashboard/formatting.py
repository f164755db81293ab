"""Pure helpers the dashboard pages format with: redaction, durations, timelines, chart geometry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.api.security.redaction import REDACTED, redact, redact_payload

# The dashboard's filters; the rule is services/api/security/redaction.py.
__all__ = ["REDACTED", "redact", "redact_payload"]

def progress(row: Any) -> dict[str, Any]:
    """A job's last reported progress for its page and state.json: counts, message, and a line of text."""
    done, total, message = row["progress_done"], row["progress_total"], row["progress_message"]
    if done is None:
        return {"done": None, "total": None, "message": None, "text": ""}
    counts = f"{done:,} of {total:,} ({100 * done / total:.0f} %)" if total else f"{done:,} done"
    return {"done": done, "total": total, "message": message,
            "text": f"{counts}: {message}" if message else counts}


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def compact_json(value: Any, limit: int = 140) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float | None) -> str:
    """A human duration: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "—"
    delta = (now - moment).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


@dataclass(frozen=True)
class Step:
    """One row of a job's state timeline."""

    state: str
    at: datetime
    reason: str | None
    attempt: int
    worker: str | None
    error: str | None
    traceback: str | None
    ran_seconds: float | None  # how long the attempt that ended here ran
    held_seconds: float | None  # how long the job stayed in this state (None for the current one)
    # The attempt counted over the job's whole life: `attempt` restarts at a requeue, this does not
    # (two "attempt 1" blocks after a requeue read as one run shown twice). 0 before the first run.
    number: int = 0


def timeline(history: Sequence[Any]) -> list[Step]:
    """Steps from job_states rows (records or mappings), oldest first."""
    steps = []
    number = 0
    for index, row in enumerate(history):
        following = history[index + 1]["created_at"] if index + 1 < len(history) else None
        if row["state"] == "processing":
            number += 1
        steps.append(Step(
            state=row["state"], at=row["created_at"], reason=row["reason"], attempt=row["attempt"],
            worker=row["worker"], error=row["error"], traceback=row["traceback"],
            ran_seconds=row["duration_ms"] / 1000 if row["duration_ms"] is not None else None,
            held_seconds=(following - row["created_at"]).total_seconds() if following is not None else None,
            number=number,
        ))
    return steps


def failed_attempts(steps: Sequence[Step]) -> list[Step]:
    """The steps that ended an attempt with an error, one per attempt, newest first."""
    return [step for step in reversed(steps) if step.error or step.traceback]


@dataclass(frozen=True)
class Chart:
    """Two polylines (succeeded, failed) scaled into a width x height box, plus axis labels."""

    width: int
    height: int
    succeeded: str  # SVG points
    failed: str
    succeeded_area: str  # closed polygon under the succeeded line
    peak: int
    labels: list[tuple[float, str]]  # (x, text) along the bottom
    total_succeeded: int
    total_failed: int


def nice_ceiling(value: float) -> int:
    """The y-axis top for a peak: the next of 2, 3, 4, 5, 6, 8, 10 times a power of ten (at least 2)."""
    magnitude = 1
    while True:
        for step in (1, 2, 3, 4, 5, 6, 8):
            top = step * magnitude
            if top >= max(value, 2):
                return top
        magnitude *= 10


def axis_label(value: float) -> str:
    return f"{value:g}"


def chart(
    points: Sequence[tuple[datetime, int, int]], *, width: int = 600, height: int = 160, label_every: int = 6,
    label_format: str = "%H:%M",
) -> Chart:
    """Geometry for a succeeded/failed line chart; the y scale starts at zero and fits the peak."""
    count = len(points)
    peak = nice_ceiling(max([0, *(max(ok, bad) for _, ok, bad in points)]))
    step = width / (count - 1) if count > 1 else 0.0

    def xy(index: int, value: int) -> str:
        return f"{index * step:.1f},{height - value * height / peak:.1f}"

    ok_line = " ".join(xy(index, ok) for index, (_, ok, _) in enumerate(points))
    bad_line = " ".join(xy(index, bad) for index, (_, _, bad) in enumerate(points))
    area = f"0,{height} {ok_line} {(count - 1) * step:.1f},{height}" if count else ""
    labels = [(index * step, at.strftime(label_format))
              for index, (at, _, _) in enumerate(points) if index % label_every == 0]
    return Chart(width, height, ok_line, bad_line, area, peak, labels,
                 sum(ok for _, ok, _ in points), sum(bad for _, _, bad in points))
