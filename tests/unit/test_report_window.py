"""Which day the daily report covers, in the scheduler's time zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.maintenance_worker.report import report_window


@pytest.mark.parametrize(("moment", "timezone", "day", "start", "end"), [
    # 03:00 UTC on 2 March is still 1 March in New York: the report covers 28 February there.
    (datetime(2030, 3, 2, 3, 0, tzinfo=UTC), "America/New_York", date(2030, 2, 28),
     datetime(2030, 2, 28, 5, 0, tzinfo=UTC), datetime(2030, 3, 1, 5, 0, tzinfo=UTC)),
    (datetime(2030, 3, 2, 6, 0, tzinfo=UTC), "UTC", date(2030, 3, 1),
     datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 3, 2, tzinfo=UTC)),
    # Europe/Paris springs forward on 31 March 2030: that day has 23 hours.
    (datetime(2030, 4, 1, 4, 0, tzinfo=UTC), "Europe/Paris", date(2030, 3, 31),
     datetime(2030, 3, 30, 23, 0, tzinfo=UTC), datetime(2030, 3, 31, 22, 0, tzinfo=UTC)),
    # … and falls back on 27 October 2030: 25 hours.
    (datetime(2030, 10, 28, 5, 0, tzinfo=UTC), "Europe/Paris", date(2030, 10, 27),
     datetime(2030, 10, 26, 22, 0, tzinfo=UTC), datetime(2030, 10, 27, 23, 0, tzinfo=UTC)),
])
def test_report_window(moment: datetime, timezone: str, day: date, start: datetime, end: datetime) -> None:
    assert report_window(moment, timezone) == (day, start, end)
