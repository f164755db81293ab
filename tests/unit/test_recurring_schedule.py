"""Cron schedules, DST and the misfire policy as tables: fixed datetimes, no waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.cron import (
    MAX_CATCH_UP,
    InvalidSchedule,
    MisfirePolicy,
    catch_up,
    crontab_day_of_week,
    parse_cron,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(moments: list[datetime]) -> list[str]:
    return [moment.astimezone(BERLIN).isoformat() for moment in moments]


@pytest.mark.parametrize(
    ("cron", "after", "until", "expected"),
    [
        # Spring forward 2027-03-28: 02:00 CET jumps to 03:00 CEST, so 02:30 never exists that night.
        # The daily 02:30 runs once, an hour of wall-clock later (03:30 CEST = 01:30 UTC).
        ("30 2 * * *", "2027-03-27T12:00", "2027-03-29T12:00",
         ["2027-03-28T03:30:00+02:00", "2027-03-29T02:30:00+02:00"]),
        # The hourly job has no 02:00 that night: 01:00 CET is followed by 03:00 CEST, one real hour later.
        ("0 * * * *", "2027-03-27T23:30", "2027-03-28T02:30",
         ["2027-03-28T01:00:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-28T04:00:00+02:00"]),
        # Autumn back 2027-10-31: 03:00 CEST goes back to 02:00 CET, so 02:00-02:59 happens twice.
        # The daily 02:30 runs once, in the first pass (CEST); the second pass is skipped.
        ("30 2 * * *", "2027-10-30T12:00", "2027-11-01T12:00",
         ["2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00"]),
        # The hourly job runs every real hour, so 02:00 twice: once in CEST and once in CET.
        ("0 * * * *", "2027-10-30T23:30", "2027-10-31T02:30",
         ["2027-10-31T02:00:00+02:00", "2027-10-31T02:00:00+01:00", "2027-10-31T03:00:00+01:00"]),
        # A fixed list of hours is a fixed time: 02:15 once on the autumn night too.
        ("15 1,2 * * *", "2027-10-30T22:00", "2027-10-31T03:00",
         ["2027-10-31T01:15:00+02:00", "2027-10-31T02:15:00+02:00"]),
    ],
)
def test_berlin_dst_occurrences(cron: str, after: str, until: str, expected: list[str]) -> None:
    schedule = parse_cron(cron, "Europe/Berlin")
    occurrences, count = schedule.between(utc(after), utc(until))
    assert local(occurrences) == expected
    assert count == len(expected)


@pytest.mark.parametrize(
    ("cron", "day", "runs"),
    [
        ("30 2 * * *", "2027-03-28", 1),
        ("0 * * * *", "2027-03-28", 23),  # the day has 23 hours
        ("30 2 * * *", "2027-10-31", 1),
        ("0 * * * *", "2027-10-31", 25),  # the day has 25 hours
        ("0 * * * *", "2027-06-15", 24),
    ],
)
def test_runs_per_local_day_across_dst(cron: str, day: str, runs: int) -> None:
    start = datetime.fromisoformat(day).replace(tzinfo=BERLIN)
    end = (start + timedelta(days=1)).replace(tzinfo=BERLIN)
    _, count = parse_cron(cron, "Europe/Berlin").between(
        start.astimezone(UTC) - timedelta(microseconds=1), end.astimezone(UTC) - timedelta(microseconds=1)
    )
    assert count == runs


@pytest.mark.parametrize(
    ("crontab", "apscheduler"),
    [
        ("*", "*"),
        ("0", "6"),  # crontab Sunday is APScheduler's 6
        ("7", "6"),
        ("1", "0"),
        ("1-5", "0,1,2,3,4"),
        ("*/2", "6,1,3,5"),  # Sunday, Tuesday, Thursday, Saturday
        ("5,6,0", "6,4,5"),
        ("mon-fri", "mon-fri"),
        ("sun", "sun"),
    ],
)
def test_day_of_week_follows_crontab(crontab: str, apscheduler: str) -> None:
    assert crontab_day_of_week(crontab) == apscheduler


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("0 3 * * 0", "2027-01-01T00:00", "2027-01-03T03:00"),  # the seed's weekly clean-up: a Sunday
        ("0 3 * * 7", "2027-01-01T00:00", "2027-01-03T03:00"),
        ("0 9 * * 1-5", "2027-01-01T12:00", "2027-01-04T09:00"),  # Friday noon → Monday 09:00
        ("*/5 * * * * *", "2027-01-01T00:00:01", "2027-01-01T00:00:05"),  # leading seconds field
        ("* * * * * *", "2027-01-01T00:00:00", "2027-01-01T00:00:01"),
        ("0 6 * * *", "2027-01-01T06:00", "2027-01-02T06:00"),  # strictly after
    ],
)
def test_next_occurrence_in_utc(cron: str, after: str, expected: str) -> None:
    assert parse_cron(cron, "UTC").next_after(utc(after)) == utc(expected)


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [
        ("* * * *", "UTC"),
        ("* * * * * * *", "UTC"),
        ("61 * * * *", "UTC"),
        ("0 0 * * 8", "UTC"),
        ("0 0 * * *", "Mars/Olympus"),
        ("banana * * * *", "UTC"),
    ],
)
def test_unusable_schedules_are_refused(cron: str, timezone: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_cron(cron, timezone)


EVERY_MINUTE = parse_cron("* * * * *", "UTC")


@pytest.mark.parametrize(
    ("policy", "last", "now", "grace", "runs", "missed"),
    [
        # Three occurrences (10:01, 10:02, 10:03) missed, all inside the grace window.
        (MisfirePolicy.FIRE_ONCE, "10:00", "10:03:30", 3600, ["10:03"], 3),
        (MisfirePolicy.SKIP, "10:00", "10:03:30", 3600, [], 3),
        (MisfirePolicy.FIRE_ALL, "10:00", "10:03:30", 3600, ["10:01", "10:02", "10:03"], 3),
        # A 90 s grace window keeps only 10:03.
        (MisfirePolicy.FIRE_ONCE, "10:00", "10:03:30", 90, ["10:03"], 1),
        (MisfirePolicy.FIRE_ALL, "10:00", "10:03:30", 90, ["10:03"], 1),
        # Everything missed is older than the grace window: nothing runs under any policy.
        (MisfirePolicy.FIRE_ONCE, "08:00", "10:00:30", 20, [], 0),
        (MisfirePolicy.FIRE_ALL, "08:00", "10:00:30", 20, [], 0),
        (MisfirePolicy.FIRE_ONCE, "10:00", "10:03:30", 0, [], 0),
        # Nothing missed: the last fire was the latest occurrence.
        (MisfirePolicy.FIRE_ONCE, "10:03", "10:03:30", 3600, [], 0),
        (MisfirePolicy.FIRE_ALL, "10:03", "10:03:30", 3600, [], 0),
        # Never fired before: the schedule starts from now.
        (MisfirePolicy.FIRE_ALL, None, "10:03:30", 3600, [], 0),
        (MisfirePolicy.FIRE_ONCE, None, "10:03:30", 3600, [], 0),
    ],
)
def test_misfire_policy(
    policy: MisfirePolicy, last: str | None, now: str, grace: int, runs: list[str], missed: int
) -> None:
    def at(clock: str) -> datetime:
        return utc(f"2027-05-04T{clock}")

    plan = catch_up(EVERY_MINUTE, policy, last_fire_time=at(last) if last else None, now=at(now),
                    grace_seconds=grace)
    assert plan.runs == [at(run) for run in runs]
    assert plan.missed == missed


def test_fire_all_is_capped_to_the_most_recent_occurrences() -> None:
    every_second = parse_cron("* * * * * *", "UTC")
    now = utc("2027-05-04T12:00:00")
    plan = catch_up(every_second, MisfirePolicy.FIRE_ALL, last_fire_time=now - timedelta(seconds=2500), now=now,
                    grace_seconds=3600)
    assert plan.missed == 2500
    assert len(plan.runs) == MAX_CATCH_UP
    assert plan.runs[-1] == now
    assert plan.runs[0] == now - timedelta(seconds=MAX_CATCH_UP - 1)


def test_misfire_across_the_autumn_change_counts_real_hours() -> None:
    hourly = parse_cron("0 * * * *", "Europe/Berlin")
    # Stopped from 01:30 CEST to 03:30 CET: 02:00 CEST, 02:00 CET and 03:00 CET were missed.
    plan = catch_up(hourly, MisfirePolicy.FIRE_ALL, last_fire_time=utc("2027-10-30T23:30"),
                    now=utc("2027-10-31T02:30"), grace_seconds=86400)
    assert local(plan.runs) == ["2027-10-31T02:00:00+02:00", "2027-10-31T02:00:00+01:00", "2027-10-31T03:00:00+01:00"]
