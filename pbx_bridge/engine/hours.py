"""Service hours: when the call centre is open, in the deployment's local time.

Pure: no I/O and no clock reads. Instants are epoch seconds (UTC); the calendar turns them into local
wall-clock time with the time zone database, so daylight-saving switches come from ``zoneinfo``, not from
arithmetic on fixed offsets. Calls outside service hours are ``after_hours`` (SERVICE_STANDARD.md, "Service
hours") and count against no ``answer.*`` or ``call.unanswered`` rule.

Default calendar (工作时间, local time):

- winter, 1 Oct to 30 Apr: 08:30-12:00 and 14:30-20:00 (冬天)
- summer, 1 May to 30 Sep: 08:30-12:00 and 15:00-21:00 (夏天, 5月1日-9月30日)
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"

_MINUTES_PER_DAY: Final = 24 * 60
_PERIOD_RE: Final = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_MONTH_DAY_RE: Final = re.compile(r"(\d{2})-(\d{2})")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """One daily opening period in local wall-clock minutes: ``start_min`` inclusive, ``end_min`` exclusive.

    ``end_min`` may be 1440 ("24:00") so that a period can run up to midnight.
    """

    start_min: int
    end_min: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_min < self.end_min <= _MINUTES_PER_DAY:
            raise ValueError(f"must start before it ends within one day, got {self}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``"HH:MM-HH:MM"`` (``"24:00"`` allowed as the end); raises ``ValueError``."""
        match = _PERIOD_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"must look like 'HH:MM-HH:MM', got {text!r}")
        sh, sm, eh, em = (int(group) for group in match.groups())
        if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
            raise ValueError(f"not a valid time of day in {text!r}")
        start, end = sh * 60 + sm, eh * 60 + em
        if start >= end:
            # Periods across midnight are not supported: a night shift is two periods on two days.
            raise ValueError(f"must start before it ends, got {text!r}")
        return cls(start, end)

    @property
    def start_s(self) -> int:
        """Start as seconds after local midnight."""
        return self.start_min * 60

    @property
    def end_s(self) -> int:
        """End as seconds after local midnight."""
        return self.end_min * 60

    def contains(self, second_of_day: float) -> bool:
        """Whether a local wall-clock time (seconds after midnight) falls inside the period."""
        return self.start_s <= second_of_day < self.end_s

    def __str__(self) -> str:
        return (
            f"{self.start_min // 60:02d}:{self.start_min % 60:02d}-"
            f"{self.end_min // 60:02d}:{self.end_min % 60:02d}"
        )


@dataclass(frozen=True, slots=True, order=True)
class MonthDay:
    """A day of the year without a year, e.g. the first day of a season."""

    month: int
    day: int

    def __post_init__(self) -> None:
        try:
            # 2000 is a leap year, so 02-29 is accepted; in other years that season starts on 1 March.
            date(2000, self.month, self.day)
        except ValueError:
            raise ValueError(f"not a valid month and day: {self.month:02d}-{self.day:02d}") from None

    @classmethod
    def parse(cls, text: str) -> MonthDay:
        """Parse ``"MM-DD"``; raises ``ValueError``."""
        match = _MONTH_DAY_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"must look like 'MM-DD', got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> MonthDay:
        """The month and day of a date."""
        return cls(day.month, day.day)

    def __str__(self) -> str:
        return f"{self.month:02d}-{self.day:02d}"


@dataclass(frozen=True, slots=True)
class Season:
    """Opening periods that apply every day from ``start`` until the next season starts."""

    name: str
    start: MonthDay
    periods: tuple[Period, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.periods))
        for before, after in pairwise(ordered):
            if after.start_min < before.end_min:
                raise ValueError(f"periods {before} and {after} overlap")
        # Sorted periods let equal seasons compare equal whatever order the config listed them in.
        object.__setattr__(self, "periods", ordered)


WINTER: Final = Season("winter", MonthDay(10, 1), (Period.parse("08:30-12:00"), Period.parse("14:30-20:00")))
SUMMER: Final = Season("summer", MonthDay(5, 1), (Period.parse("08:30-12:00"), Period.parse("15:00-21:00")))
DEFAULT_SEASONS: Final = (SUMMER, WINTER)
_ALL_DAY: Final = Season("always", MonthDay(1, 1), (Period(0, _MINUTES_PER_DAY),))


def _default_zone() -> tzinfo:
    return ZoneInfo(DEFAULT_TIMEZONE)


@dataclass(frozen=True, slots=True)
class ServiceCalendar:
    """Service hours of one queue (or of the whole centre) in one local time zone.

    A date is a service day if it is an extra working day, or else if it is neither a holiday nor on a
    closed weekday (``date.weekday()``: 0 = Monday). On a service day the periods of its season apply.
    """

    tz: tzinfo = field(default_factory=_default_zone)
    seasons: tuple[Season, ...] = DEFAULT_SEASONS
    holidays: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()
    closed_weekdays: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not self.seasons:
            raise ValueError("a calendar needs at least one season")
        ordered = tuple(sorted(self.seasons, key=lambda season: season.start))
        for before, after in pairwise(ordered):
            if before.start == after.start:
                raise ValueError(f"seasons {before.name!r} and {after.name!r} both start on {after.start}")
        if len({season.name for season in ordered}) != len(ordered):
            raise ValueError("season names must be unique")
        both = self.holidays & self.extra_working_days
        if both:
            raise ValueError(f"{min(both)} is both a holiday and an extra working day")
        if not self.closed_weekdays <= frozenset(range(7)):
            raise ValueError("closed weekdays must be 0 (Monday) to 6 (Sunday)")
        # Season lookup walks the seasons in start order.
        object.__setattr__(self, "seasons", ordered)

    @classmethod
    def always_open(cls, tz: tzinfo = UTC) -> ServiceCalendar:
        """A calendar open around the clock every day (``--ignore-hours``), still dating days in ``tz``."""
        return cls(tz=tz, seasons=(_ALL_DAY,))

    def as_always_open(self) -> ServiceCalendar:
        """This calendar's time zone, open around the clock every day."""
        return ServiceCalendar.always_open(self.tz)

    def season(self, name: str) -> Season:
        """The season called ``name``; raises ``KeyError``."""
        for season in self.seasons:
            if season.name == name:
                return season
        raise KeyError(name)

    def season_on(self, day: date) -> Season:
        """The season in force on a local date (the last one started, wrapping over New Year)."""
        today = MonthDay.of(day)
        current = self.seasons[-1]  # before the first start of the year, last year's final season runs on
        for season in self.seasons:
            if season.start <= today:
                current = season
        return current

    def is_service_day(self, day: date) -> bool:
        """Whether the centre opens at all on a local date."""
        if day in self.extra_working_days:
            return True
        return day not in self.holidays and day.weekday() not in self.closed_weekdays

    def periods_on(self, day: date) -> tuple[Period, ...]:
        """Opening periods of a local date; empty when closed all day."""
        return self.season_on(day).periods if self.is_service_day(day) else ()

    def service_day(self, epoch: float) -> date:
        """The local calendar date of an instant ("today" on the wallboard)."""
        return datetime.fromtimestamp(epoch, self.tz).date()

    def is_open(self, epoch: float) -> bool:
        """Whether an instant falls in service hours, judged by the local wall clock at that instant."""
        local = datetime.fromtimestamp(epoch, self.tz)
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return any(period.contains(second) for period in self.periods_on(local.date()))

    def day_bounds(self, day: date) -> tuple[float, float]:
        """Epochs of the start of a local date and of the next one (23 h or 25 h on DST switch days)."""
        return self._first_instant(day), self._first_instant(day + timedelta(days=1))

    def open_intervals(self, day: date) -> tuple[tuple[float, float], ...]:
        """Epoch intervals ``[start, end)`` during which the centre is open on a local date, in order."""
        periods = self.periods_on(day)
        if not periods:
            return ()
        lo, hi = self.day_bounds(day)
        # Epoch that local midnight would have if local time were UTC; wall = epoch + offset - naive_midnight.
        naive_midnight = calendar.timegm(day.timetuple())
        merged: list[tuple[float, float]] = []
        for seg_lo, seg_hi, offset in self._segments(lo, hi):
            for period in periods:
                start = max(seg_lo, naive_midnight + period.start_s - offset)
                end = min(seg_hi, naive_midnight + period.end_s - offset)
                if start >= end:
                    continue
                if merged and start <= merged[-1][1]:
                    # A period cut in two by a DST switch is still one opening.
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
        return tuple(merged)

    def open_seconds_between(self, start: float, end: float) -> float:
        """Seconds of service hours in ``[start, end)``; 0 when ``end <= start``."""
        if end <= start:
            return 0.0
        total = 0.0
        day, last = self.service_day(start), self.service_day(end)
        while day <= last:
            for lo, hi in self.open_intervals(day):
                total += max(0.0, min(hi, end) - max(lo, start))
            day += timedelta(days=1)
        return total

    def _offset(self, epoch: float) -> float:
        offset = datetime.fromtimestamp(epoch, self.tz).utcoffset()
        return 0.0 if offset is None else offset.total_seconds()

    def _first_instant(self, day: date) -> float:
        """First epoch at which the local wall clock reads ``day`` 00:00 or later."""
        midnight = datetime.combine(day, time(), tzinfo=self.tz)
        guess = midnight.timestamp()  # fold=0: the first of two midnights when the clock goes back
        if datetime.fromtimestamp(guess, self.tz) == midnight:
            return guess
        # Midnight was skipped by a forward switch (e.g. America/Santiago). fold=0 read it with the old
        # offset, fold=1 with the new one; the day starts at the switch, which lies between the two.
        lo, hi = int(midnight.replace(fold=1).timestamp()), int(guess)
        while lo < hi:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz) >= midnight:
                hi = mid
            else:
                lo = mid + 1
        return float(lo)

    def _segments(self, lo: float, hi: float) -> list[tuple[float, float, float]]:
        """Split ``[lo, hi)`` where the UTC offset changes: ``(start, end, offset)`` pieces.

        Assumes at most one change between two instants with the same offset, which holds for real zones
        within one day.
        """
        pieces: list[tuple[float, float, float]] = []
        start = lo
        while start < hi:
            offset = self._offset(start)
            end = hi
            if self._offset(hi - 1) != offset:
                # Transitions fall on whole seconds: bisect for the first second with another offset.
                a, b = int(start), int(hi - 1)
                while a < b:
                    mid = (a + b) // 2
                    if self._offset(mid) != offset:
                        b = mid
                    else:
                        a = mid + 1
                end = float(a)
            pieces.append((start, end, offset))
            start = end
        return pieces


ALWAYS_OPEN: Final = ServiceCalendar.always_open()


@dataclass(frozen=True, slots=True)
class CalendarSet:
    """The default calendar and per-queue overrides (like ``PolicySet``)."""

    default: ServiceCalendar = field(default_factory=ServiceCalendar)
    queues: dict[str, ServiceCalendar] = field(default_factory=dict)

    def for_queue(self, queue: str | None) -> ServiceCalendar:
        """The calendar of a queue, or the default one."""
        if queue is None:
            return self.default
        return self.queues.get(queue, self.default)

    def ignoring_hours(self) -> CalendarSet:
        """A copy where every calendar is always open, in its own time zone (``--ignore-hours``)."""
        return replace(
            self,
            default=self.default.as_always_open(),
            queues={name: cal.as_always_open() for name, cal in self.queues.items()},
        )
