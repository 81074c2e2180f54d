"""Service hours: seasons, lunch gap, holidays and DST-safe local days (pbx_bridge.engine.hours)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pbx_bridge.engine.hours import (
    ALWAYS_OPEN,
    SUMMER,
    WINTER,
    CalendarSet,
    MonthDay,
    Period,
    Season,
    ServiceCalendar,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
SANTIAGO = ZoneInfo("America/Santiago")


def at(day: date, hhmm: str, tz: ZoneInfo = SHANGHAI) -> float:
    """Epoch of ``HH:MM[:SS]`` local time on ``day`` (the first occurrence when ambiguous)."""
    hour, minute, second = ([int(part) for part in hhmm.split(":")] + [0])[:3]
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz).timestamp()


def test_default_calendar_is_the_standard_in_shanghai() -> None:
    """The default calendar is Asia/Shanghai with the standard's winter and summer periods and starts."""
    cal = ServiceCalendar()
    assert cal.tz is SHANGHAI
    assert cal.season("winter").start == MonthDay(10, 1)
    assert [str(p) for p in cal.season("winter").periods] == ["08:30-12:00", "14:30-20:00"]
    assert cal.season("summer").start == MonthDay(5, 1)
    assert [str(p) for p in cal.season("summer").periods] == ["08:30-12:00", "15:00-21:00"]
    assert cal.holidays == frozenset()
    assert cal.closed_weekdays == frozenset()


WINTER_DAY = date(2024, 1, 15)
SUMMER_DAY = date(2024, 7, 15)


@pytest.mark.parametrize(
    ("day", "hhmm", "expected"),
    [
        (WINTER_DAY, "08:29:59", False),
        (WINTER_DAY, "08:30", True),
        (WINTER_DAY, "11:59:59", True),
        (WINTER_DAY, "12:00", False),
        (WINTER_DAY, "13:00", False),
        (WINTER_DAY, "14:29:59", False),
        (WINTER_DAY, "14:30", True),
        (WINTER_DAY, "19:59:59", True),
        (WINTER_DAY, "20:00", False),
        (WINTER_DAY, "20:30", False),
        (SUMMER_DAY, "08:30", True),
        (SUMMER_DAY, "12:00", False),
        (SUMMER_DAY, "14:30", False),
        (SUMMER_DAY, "14:59:59", False),
        (SUMMER_DAY, "15:00", True),
        (SUMMER_DAY, "20:30", True),
        (SUMMER_DAY, "20:59:59", True),
        (SUMMER_DAY, "21:00", False),
        (SUMMER_DAY, "03:00", False),
    ],
)
def test_open_inside_periods_closed_at_lunch_and_night(day: date, hhmm: str, expected: bool) -> None:
    """Start times are open, end times are closed, and the lunch gap and the night are closed."""
    assert ServiceCalendar().is_open(at(day, hhmm)) is expected


@pytest.mark.parametrize(
    ("day", "hhmm", "expected"),
    [
        (date(2024, 4, 30), "14:45", True),  # last winter day: afternoon opens 14:30
        (date(2024, 5, 1), "14:45", False),  # first summer day: afternoon opens 15:00
        (date(2024, 4, 30), "20:30", False),
        (date(2024, 5, 1), "20:30", True),
        (date(2024, 9, 30), "20:30", True),  # last summer day: open until 21:00
        (date(2024, 10, 1), "20:30", False),  # first winter day: closes 20:00
        (date(2024, 9, 30), "14:45", False),
        (date(2024, 10, 1), "14:45", True),
    ],
)
def test_season_boundaries(day: date, hhmm: str, expected: bool) -> None:
    """Winter hours run to 30 April and from 1 October; summer hours run 1 May to 30 September."""
    assert ServiceCalendar().is_open(at(day, hhmm)) is expected


def test_season_lookup_wraps_over_new_year() -> None:
    """January and December belong to winter, which started on 1 October of the previous year."""
    cal = ServiceCalendar()
    assert cal.season_on(date(2025, 1, 1)) is cal.season("winter")
    assert cal.season_on(date(2024, 12, 31)) is cal.season("winter")
    assert cal.season_on(date(2024, 6, 1)) is cal.season("summer")


def test_configurable_season_start() -> None:
    """Moving the summer start to 06-01 keeps May on winter hours."""
    summer = Season("summer", MonthDay.parse("06-01"), SUMMER.periods)
    cal = ServiceCalendar(seasons=(summer, WINTER))
    assert cal.is_open(at(date(2024, 5, 15), "14:45"))
    assert not cal.is_open(at(date(2024, 6, 1), "14:45"))


def test_holidays_are_closed_all_day() -> None:
    """A holiday is closed during what would be service hours, and the next day opens normally."""
    cal = ServiceCalendar(holidays=frozenset({date(2024, 10, 1)}))
    assert not cal.is_open(at(date(2024, 10, 1), "09:00"))
    assert cal.open_intervals(date(2024, 10, 1)) == ()
    assert cal.is_open(at(date(2024, 10, 2), "09:00"))


def test_closed_weekdays_and_extra_working_days() -> None:
    """Closed weekdays are closed unless listed as extra working days, which also override holidays."""
    saturday, sunday = date(2024, 9, 14), date(2024, 9, 15)
    cal = ServiceCalendar(closed_weekdays=frozenset({5, 6}), extra_working_days=frozenset({saturday}))
    assert cal.is_open(at(saturday, "09:00"))
    assert not cal.is_open(at(sunday, "09:00"))
    assert cal.is_open(at(date(2024, 9, 16), "09:00"))


def test_holiday_and_extra_working_day_conflict_is_rejected() -> None:
    """The same date cannot be both a holiday and an extra working day."""
    day = date(2024, 10, 1)
    with pytest.raises(ValueError, match="2024-10-01"):
        ServiceCalendar(holidays=frozenset({day}), extra_working_days=frozenset({day}))


def test_service_day_is_the_local_date() -> None:
    """An instant late in the UTC day already belongs to the next local date in Shanghai."""
    epoch = datetime(2024, 1, 15, 17, 0, tzinfo=UTC).timestamp()  # 01:00 on the 16th in Shanghai
    assert ServiceCalendar().service_day(epoch) == date(2024, 1, 16)
    assert ALWAYS_OPEN.service_day(epoch) == date(2024, 1, 15)


def test_day_bounds_in_shanghai() -> None:
    """A Shanghai day runs from 16:00 UTC of the previous day for exactly 24 hours."""
    lo, hi = ServiceCalendar().day_bounds(date(2024, 1, 16))
    assert lo == datetime(2024, 1, 15, 16, 0, tzinfo=UTC).timestamp()
    assert hi - lo == 86_400


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2024, 3, 30), 24), (date(2024, 3, 31), 23), (date(2024, 10, 27), 25), (date(2024, 10, 28), 24)],
)
def test_day_bounds_on_dst_switch_days(day: date, hours: int) -> None:
    """Berlin days run midnight to midnight: 23 h when clocks go forward, 25 h when they go back."""
    cal = ServiceCalendar(tz=BERLIN)
    lo, hi = cal.day_bounds(day)
    assert hi - lo == hours * 3600
    assert lo == at(day, "00:00", BERLIN)
    assert hi == at(day + timedelta(days=1), "00:00", BERLIN)
    assert cal.service_day(lo) == day
    assert cal.service_day(hi - 0.001) == day
    assert cal.service_day(hi) == day + timedelta(days=1)


def test_day_bounds_when_midnight_is_skipped() -> None:
    """In Santiago, where clocks jump from 00:00 to 01:00, the day starts at 01:00 and lasts 23 hours."""
    cal = ServiceCalendar(tz=SANTIAGO)
    lo, hi = cal.day_bounds(date(2024, 9, 8))
    assert datetime.fromtimestamp(lo, SANTIAGO).strftime("%Y-%m-%d %H:%M") == "2024-09-08 01:00"
    assert hi - lo == 23 * 3600
    assert cal.day_bounds(date(2024, 9, 7))[1] == lo


@pytest.mark.parametrize("day", [date(2024, 3, 31), date(2024, 10, 27)])
def test_opening_hours_follow_the_wall_clock_on_dst_days(day: date) -> None:
    """On Berlin switch days the centre still opens at 08:30 and closes at 20:00 local time (9 open hours)."""
    cal = ServiceCalendar(tz=BERLIN)
    assert cal.open_intervals(day) == (
        (at(day, "08:30", BERLIN), at(day, "12:00", BERLIN)),
        (at(day, "14:30", BERLIN), at(day, "20:00", BERLIN)),
    )
    assert cal.is_open(at(day, "08:30", BERLIN))
    assert not cal.is_open(at(day, "08:29:59", BERLIN))
    lo, hi = cal.day_bounds(day)
    assert cal.open_seconds_between(lo, hi) == 9 * 3600


@pytest.mark.parametrize(("day", "open_hours"), [(date(2024, 3, 31), 2), (date(2024, 10, 27), 4)])
def test_night_period_across_a_dst_switch(day: date, open_hours: int) -> None:
    """A 01:00-04:00 period loses the skipped hour in spring and gains the repeated hour in autumn."""
    night = Season("night", MonthDay(1, 1), (Period.parse("01:00-04:00"),))
    cal = ServiceCalendar(tz=BERLIN, seasons=(night,))
    lo, hi = cal.day_bounds(day)
    assert cal.open_seconds_between(lo, hi) == open_hours * 3600
    intervals = cal.open_intervals(day)
    # is_open agrees with the intervals minute by minute across the whole day.
    for minute in range(int(hi - lo) // 60):
        epoch = lo + minute * 60
        inside = any(a <= epoch < b for a, b in intervals)
        assert cal.is_open(epoch) is inside, datetime.fromtimestamp(epoch, BERLIN)


def test_open_seconds_between() -> None:
    """Open seconds count only service hours, across days, and are zero for an empty or reversed range."""
    cal = ServiceCalendar()
    day = WINTER_DAY
    lo, hi = cal.day_bounds(day)
    assert cal.open_seconds_between(lo, hi) == 9 * 3600
    assert cal.open_seconds_between(lo, hi + 86_400) == 18 * 3600
    assert cal.open_seconds_between(at(day, "11:00"), at(day, "15:00")) == 1.5 * 3600
    assert cal.open_seconds_between(at(day, "12:00"), at(day, "14:30")) == 0
    assert cal.open_seconds_between(hi, lo) == 0


def test_always_open_and_ignoring_hours() -> None:
    """ALWAYS_OPEN is open at any instant, and ignoring_hours keeps each calendar's time zone."""
    night = at(WINTER_DAY, "03:00")
    assert ALWAYS_OPEN.is_open(night)
    assert ALWAYS_OPEN.open_seconds_between(0, 86_400 * 3) == 86_400 * 3
    cals = CalendarSet(ServiceCalendar(), {"vip": ServiceCalendar(tz=BERLIN)})
    ignoring = cals.ignoring_hours()
    assert ignoring.default.is_open(night)
    assert ignoring.default.tz is SHANGHAI
    assert ignoring.for_queue("vip").tz is BERLIN
    assert ignoring.for_queue("vip").is_open(night)


def test_calendar_set_falls_back_to_default() -> None:
    """A queue without its own calendar, or no queue, gets the default calendar."""
    vip = ServiceCalendar(seasons=(Season("all", MonthDay(1, 1), (Period.parse("00:00-24:00"),)),))
    cals = CalendarSet(ServiceCalendar(), {"vip": vip})
    assert cals.for_queue("vip") is vip
    assert cals.for_queue("sales") is cals.default
    assert cals.for_queue(None) is cals.default


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [("08:30-12:00", 510, 720), ("8:30 - 12:00", 510, 720), ("00:00-24:00", 0, 1440)],
)
def test_period_parse(text: str, start: int, end: int) -> None:
    """Periods parse from HH:MM-HH:MM, allowing a single-digit hour, spaces and 24:00 as the end."""
    assert Period.parse(text) == Period(start, end)


@pytest.mark.parametrize(
    "text", ["0830-1200", "12:00-08:30", "08:30-08:30", "25:00-26:00", "08:60-09:00", "24:30"]
)
def test_period_parse_rejects_bad_text(text: str) -> None:
    """Malformed, reversed, empty or out-of-range periods are rejected."""
    with pytest.raises(ValueError, match=r"\S"):
        Period.parse(text)


def test_overlapping_periods_and_bad_month_days_are_rejected() -> None:
    """A season's periods may not overlap, and a season start must be a real month and day."""
    with pytest.raises(ValueError, match="overlap"):
        Season("x", MonthDay(1, 1), (Period.parse("08:00-12:00"), Period.parse("11:00-13:00")))
    with pytest.raises(ValueError, match="13-01"):
        MonthDay.parse("13-01")
    with pytest.raises(ValueError, match="MM-DD"):
        MonthDay.parse("5-1")
    assert MonthDay.parse("02-29") == MonthDay(2, 29)
