"""Cron schedules and the misfire policy as pure code: occurrences are computed, never waited for.

APScheduler 3's CronTrigger does the calendar arithmetic (time zones, DST gaps). Two things are
adjusted on top of it, both to behave like cron and Hangfire rather than like APScheduler 3:
- day-of-week numbers follow crontab (0 or 7 = Sunday); APScheduler 3 reads 0 as Monday;
- a fixed-hour schedule fires once when the clocks go back, not in both passes of the hour.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

# fire_all never replays more than this many occurrences at once; the most recent ones are kept.
MAX_CATCH_UP = 1000

_DOW_TERM = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be scheduled."""


class MisfirePolicy(StrEnum):
    FIRE_ONCE = "fire_once"  # one run, at the latest missed occurrence, if any is within the grace window
    SKIP = "skip"  # missed occurrences are dropped; the schedule goes on from now
    FIRE_ALL = "fire_all"  # every missed occurrence within the grace window runs, oldest first


def crontab_day_of_week(field: str) -> str:
    """Translate a crontab day-of-week field (0 or 7 = Sunday) to APScheduler 3's (0 = Monday).

    Numbers are expanded to an explicit list; names (mon, tue, ...) mean the same in both.
    """
    days: set[int] = set()
    passthrough: list[str] = []
    for term in field.lower().split(","):
        match = _DOW_TERM.match(term)
        if match is None:
            passthrough.append(term)  # names and name ranges: APScheduler checks them
            continue
        start_text, end_text, step_text = match.groups()
        if start_text == "*":
            if step_text is None:
                return "*"
            start, end = 0, 6
        else:
            start = int(start_text)
            end = int(end_text) if end_text is not None else (7 if step_text else start)
        step = int(step_text) if step_text is not None else 1
        if not (0 <= start <= 7 and 0 <= end <= 7) or start > end or step < 1:
            raise InvalidSchedule(f"day of week {term!r} is out of range 0-7")
        days.update(day % 7 for day in range(start, end + 1, step))
    # crontab Sunday (0) is APScheduler's 6; Monday (1) is its 0.
    numbers = [str((day - 1) % 7) for day in sorted(days)]
    return ",".join(numbers + passthrough)


def parse_cron(cron: str, timezone: str) -> Schedule:
    """A schedule from 5 crontab fields, or 6 with a leading seconds field (`*/5 * * * * *`)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown IANA time zone {timezone!r}") from exc
    fields = cron.split()
    try:
        if len(fields) == 5:
            minute, hour, day, month, dow = fields
            trigger = CronTrigger.from_crontab(
                " ".join((minute, hour, day, month, crontab_day_of_week(dow))), timezone=zone
            )
        elif len(fields) == 6:
            # from_crontab has no seconds; the optional leading field is built by hand.
            second, minute, hour, day, month, dow = fields
            trigger = CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                                  day_of_week=crontab_day_of_week(dow), timezone=zone)
        else:
            raise InvalidSchedule(f"cron {cron!r} needs 5 fields (or 6 with seconds first), got {len(fields)}")
    except InvalidSchedule:
        raise
    except ValueError as exc:
        raise InvalidSchedule(f"cron {cron!r}: {exc}") from exc
    hour_field = fields[-4]
    return Schedule(cron, zone, trigger, fixed_hours="*" not in hour_field and "/" not in hour_field)


def _repeated_wall_time(moment: datetime, zone: ZoneInfo) -> bool:
    """True for the second pass through a wall-clock time when the clocks go back."""
    local = moment.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


@dataclass(frozen=True)
class Schedule:
    cron: str
    zone: ZoneInfo
    trigger: CronTrigger
    fixed_hours: bool  # no `*` or step in the hour field: "at 02:30", not "every hour"

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after `moment`, in UTC."""
        previous = moment
        while True:
            found = self.trigger.get_next_fire_time(previous, previous)
            if found is None:
                return None
            found_utc: datetime = found.astimezone(UTC)
            if found_utc <= previous:  # guards against a trigger that does not move forward
                previous = previous + timedelta(microseconds=1)
                continue
            if self.fixed_hours and _repeated_wall_time(found_utc, self.zone):
                previous = found_utc
                continue
            return found_utc

    def between(self, after: datetime, until: datetime, *, keep_last: int | None = None) -> tuple[list[datetime], int]:
        """Occurrences in (after, until], oldest first, and how many there were.

        With keep_last only the most recent ones are returned; the count is still the full one.
        """
        kept: deque[datetime] = deque(maxlen=keep_last)
        count = 0
        moment = self.next_after(after)
        while moment is not None and moment <= until:
            kept.append(moment)
            count += 1
            moment = self.next_after(moment)
        return list(kept), count


@dataclass(frozen=True)
class CatchUp:
    runs: list[datetime]  # occurrences to fire now, oldest first
    missed: int  # occurrences between the last fire and now that were inside the grace window


def catch_up(
    schedule: Schedule, policy: MisfirePolicy, *, last_fire_time: datetime | None, now: datetime,
    grace_seconds: float, cap: int = MAX_CATCH_UP,
) -> CatchUp:
    """What to fire when a scheduler (re)starts: the misfire policy applied to the missed occurrences.

    A job that never fired starts from now. Occurrences older than the grace window are dropped
    under every policy; fire_once turns the rest into one run at the latest of them.
    """
    if last_fire_time is None:
        return CatchUp([], 0)
    window_start = max(last_fire_time, now - timedelta(seconds=grace_seconds))
    missed, count = schedule.between(window_start, now, keep_last=cap)
    if policy is MisfirePolicy.SKIP or not missed:
        return CatchUp([], count)
    if policy is MisfirePolicy.FIRE_ONCE:
        return CatchUp([missed[-1]], count)
    return CatchUp(missed, count)
