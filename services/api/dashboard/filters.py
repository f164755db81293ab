"""The job list's filter form: query string in, a JobFilter (or the reasons it is wrong) out. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from shared.db.job_admin import JobFilter
from shared.jobs import JobState, QueueClass

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
FIELDS = ("state", "kind", "queue", "q", "range", "since", "until")
MAX_SEARCH = 200


@dataclass(frozen=True)
class ParsedFilter:
    job_filter: JobFilter
    values: dict[str, str]  # what the form shows back, as typed
    errors: dict[str, str] = field(default_factory=dict)  # field -> message

    def query(self, **changes: str) -> str:
        """This filter as a query string, with `changes` applied (empty values dropped)."""
        merged = {**self.values, **changes}
        return urlencode({name: value for name, value in merged.items() if value})


def _moment(text: str) -> datetime:
    """A datetime-local value (or ISO 8601); without an offset it is UTC, as every time on the dashboard."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_filter(query: Mapping[str, str], now: datetime) -> ParsedFilter:
    values = {name: query.get(name, "").strip() for name in FIELDS}
    errors: dict[str, str] = {}
    state = None
    if values["state"]:
        try:
            state = JobState(values["state"])
        except ValueError:
            errors["state"] = f"unknown state {values['state']!r}"
    if values["queue"] and values["queue"] not in {queue.value for queue in QueueClass}:
        errors["queue"] = f"unknown queue {values['queue']!r}"
    for name in ("q", "kind"):
        if "\x00" in values[name]:
            errors[name] = "must not contain NUL characters"
        elif len(values[name]) > MAX_SEARCH:
            errors[name] = f"at most {MAX_SEARCH} characters"
    since = until = None
    if values["range"]:
        if values["range"] in RANGES:
            since = now - RANGES[values["range"]]
        else:
            errors["range"] = f"unknown range {values['range']!r}"
    for name in ("since", "until"):
        if values[name]:
            try:
                moment = _moment(values[name])
            except ValueError:
                errors[name] = "not a date and time (YYYY-MM-DDTHH:MM)"
                continue
            if name == "since":
                since = moment if since is None else max(since, moment)
            else:
                until = moment
    if since is not None and until is not None and until <= since:
        errors["until"] = "must be after the start of the range"
    job_filter = JobFilter(
        state=state, queue=values["queue"] or None, kind=values["kind"] or None,
        q=values["q"] or None, since=since, until=until,
        redacted=True,  # the dashboard shows every job redacted, so it searches only what it shows
    )
    return ParsedFilter(job_filter if not errors else JobFilter(state=state), values, errors)
