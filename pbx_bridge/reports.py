"""QA and staffing reports over stored calls: pure functions, no I/O, no clock reads.

Inputs are what the store returns -- record dicts (the record contract), complaints, agent-state
intervals, unanswered callers -- plus the deployment's policies and calendars. Outputs are frozen
dataclasses with a JSON ``to_dict``. Instants are epoch seconds (UTC); periods and half-hours are
cut in the deployment's local time with ``ServiceCalendar.day_bounds``, so a DST day is 23 or 25
hours long (46 or 50 half-hours) and a week or month always starts at a local midnight.

Which calls count where (SERVICE_STANDARD.md, "Definitions" and "Service hours"):

- A call belongs to the period (or half-hour) it *arrived* in, as in ``/calls?start=&end=``, so
  a scorecard count and the matching call list always agree.
- Answer metrics (within rings, time to answer, the service levels, the half-hour report) judge
  inbound calls that were offered to agents inside service hours. After-hours and not-offered
  calls are counted but judged by no answer rule, exactly as the engine judges them.
- Per-call breaches (unconfirmed transfers, agent hung up first, over 5 minutes) are the rule ids
  the engine wrote into each record, so ``/calls?agent=A&rule=R`` lists the calls a scorecard
  counts. Holds over the limit are counted per hold (one call may hold twice).
- A complaint counts in the calendar month QA tagged it in (the store indexes tags by that time).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pbx_bridge.engine import rules
from pbx_bridge.engine.hours import ServiceCalendar
from pbx_bridge.engine.model import CallRecord, Direction, Outcome, iso, record_from_dict, secs
from pbx_bridge.engine.policy import AnswerClock, Policy, PolicySet
from pbx_bridge.store.model import AgentStateInterval, Complaint, UnansweredCall

SLOT_S: Final = 1800  # the team leads' staffing interval: half an hour
LOGGED_OUT: Final = "logged_out"  # agent-state names written by the floor tracker
PAUSED: Final = "paused"
NO_REASON: Final = "unspecified"  # a pause without a reason (a bare QueuePause)
HOUR_S: Final = 3600.0


class PeriodKind(StrEnum):
    """The length of a scorecard period."""

    DAY = "day"
    WEEK = "week"  # ISO week, Monday to Sunday
    MONTH = "month"


class GroupBy(StrEnum):
    """What a scorecard is about."""

    AGENT = "agent"
    QUEUE = "queue"


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _avg(total: float, count: int) -> float | None:
    return round(total / count, 3) if count else None


def _month_first(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


# -- periods ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Local dates ``first``..``last`` (inclusive) and their epoch bounds ``[start, end)``."""

    kind: PeriodKind
    first: date
    last: date
    start: float
    end: float
    timezone: str

    def months(self, calendar: ServiceCalendar) -> tuple[tuple[date, float, float], ...]:
        """Each calendar month the period touches: its first day and epoch bounds."""
        out: list[tuple[date, float, float]] = []
        month = _month_first(self.first)
        while month <= self.last:
            following = _next_month(month)
            out.append((month, calendar.day_bounds(month)[0], calendar.day_bounds(following)[0]))
            month = following
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: local dates, UTC instants and the time zone."""
        return {
            "kind": self.kind.value,
            "first_day": self.first.isoformat(),
            "last_day": self.last.isoformat(),
            "start": iso(self.start),
            "end": iso(self.end),
            "timezone": self.timezone,
        }


def period_of(kind: PeriodKind, day: date, calendar: ServiceCalendar) -> Period:
    """The day, ISO week or calendar month containing ``day``, in the calendar's time zone."""
    if kind is PeriodKind.DAY:
        first = last = day
    elif kind is PeriodKind.WEEK:
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=6)
    else:
        first = _month_first(day)
        last = _next_month(first) - timedelta(days=1)
    start = calendar.day_bounds(first)[0]
    end = calendar.day_bounds(last)[1]
    return Period(kind, first, last, start, end, str(calendar.tz))


# -- reading records ----------------------------------------------------------------------------------


def parse_records(rows: Iterable[Mapping[str, Any]]) -> tuple[list[CallRecord], int]:
    """Typed records from record dicts, and how many dicts were not records (skipped)."""
    out: list[CallRecord] = []
    bad = 0
    for row in rows:
        try:
            out.append(record_from_dict(dict(row)))
        except (KeyError, ValueError, TypeError):
            bad += 1
    return out, bad


def _measured(record: CallRecord) -> bool:
    """Whether the call is judged by the answer rules: inbound, offered, inside service hours."""
    return (
        record.direction is Direction.INBOUND
        and record.offered_at is not None
        and not record.after_hours
        and record.outcome is not Outcome.NOT_OFFERED
    )


def threshold_s(policy: Policy) -> float:
    """T of the service levels: the ring limit in seconds (3 rings × 3 s = 9 s by default)."""
    return policy.rings_limit * policy.ring_seconds


def _within_rings(record: CallRecord, policy: Policy) -> bool:
    """Answered on or before the ring limit; rings are counted the engine's way."""
    if record.time_to_answer_s is None:
        return False
    rings = record.rings if record.rings is not None else policy.rings(record.time_to_answer_s)
    return rings <= policy.rings_limit


def _left_within(seconds: float | None, policy: Policy) -> bool:
    """An abandon at ``seconds`` fell within T (rounded to the millisecond, like rings)."""
    return seconds is not None and round(seconds, 3) <= threshold_s(policy)


# -- scorecards ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scorecard:
    """One agent's or one queue's numbers over one period.

    For a queue, ``logged_in_s`` and ``paused_s`` are agent-seconds (two agents logged in for an
    hour make 7200); for an agent they are wall-clock seconds over all their queues.
    """

    by: GroupBy
    key: str | None  # the agent (PJSIP/1001) or queue; None: calls outside any queue
    name: str | None
    calls: int
    inbound: int
    outbound: int
    answered: int
    abandoned: int
    answer_judged: int  # inbound answered in service hours: the base of the answer metrics
    within_rings: int
    time_to_answer_total_s: float
    holds: int
    holds_over_limit: int
    unconfirmed_transfers: int
    agent_hung_up_first: int
    over_talk_max: int  # duration.over_max: talk over 5 minutes by default
    complaints: int
    complaints_in_month: int | None
    complaints_limit: int | None
    logged_in_s: float
    paused_s: float
    paused_by_reason: tuple[tuple[str, float], ...]

    @property
    def within_rings_pct(self) -> float | None:
        """Answered within the ring limit ÷ answered (judged calls), in percent."""
        return _pct(self.within_rings, self.answer_judged)

    @property
    def avg_time_to_answer_s(self) -> float | None:
        """Mean time to answer of the judged calls."""
        return _avg(self.time_to_answer_total_s, self.answer_judged)

    @property
    def complaints_breached(self) -> bool | None:
        """``agent.complaints``: the limit reached in a calendar month; None for queues."""
        if self.complaints_in_month is None or self.complaints_limit is None:
            return None
        return self.complaints_in_month >= self.complaints_limit

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "by": self.by.value,
            "key": self.key,
            "name": self.name,
            "calls": self.calls,
            "inbound": self.inbound,
            "outbound": self.outbound,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "answer_judged": self.answer_judged,
            "within_rings": self.within_rings,
            "within_rings_pct": self.within_rings_pct,
            "avg_time_to_answer_s": self.avg_time_to_answer_s,
            "holds": self.holds,
            "holds_over_limit": self.holds_over_limit,
            "unconfirmed_transfers": self.unconfirmed_transfers,
            "agent_hung_up_first": self.agent_hung_up_first,
            "over_talk_max": self.over_talk_max,
            "complaints": self.complaints,
            "complaints_in_month": self.complaints_in_month,
            "complaints_limit": self.complaints_limit,
            "complaints_breached": self.complaints_breached,
            "logged_in_s": round(self.logged_in_s, 3),
            "paused_s": round(self.paused_s, 3),
            "paused_by_reason": {reason: round(s, 3) for reason, s in self.paused_by_reason},
        }


@dataclass(frozen=True, slots=True)
class ScorecardReport:
    """Scorecards of every agent (or queue) seen in a period."""

    period: Period
    by: GroupBy
    items: tuple[Scorecard, ...]
    skipped: int  # stored rows that were not call records

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "period": self.period.to_dict(),
            "by": self.by.value,
            "items": [card.to_dict() for card in self.items],
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class _Tally:
    """Counters of one scorecard while it is being built."""

    name: str | None = None
    calls: int = 0
    inbound: int = 0
    outbound: int = 0
    answered: int = 0
    abandoned: int = 0
    judged: int = 0
    within: int = 0
    tta_total: float = 0.0
    holds: int = 0
    holds_over: int = 0
    unconfirmed: int = 0
    agent_first: int = 0
    over_max: int = 0

    def add(self, record: CallRecord, policy: Policy) -> None:
        self.calls += 1
        self.inbound += record.direction is Direction.INBOUND
        self.outbound += record.direction is Direction.OUTBOUND
        self.answered += record.outcome is Outcome.ANSWERED
        self.abandoned += record.outcome is Outcome.ABANDONED
        if _measured(record) and record.outcome is Outcome.ANSWERED and record.time_to_answer_s is not None:
            self.judged += 1
            self.within += _within_rings(record, policy)
            self.tta_total += record.time_to_answer_s
        self.holds += len(record.holds)
        self.holds_over += sum(hold.seconds > policy.hold_limit_s for hold in record.holds)
        self.unconfirmed += rules.TRANSFER_UNCONFIRMED in record.violations
        self.agent_first += rules.HANGUP_AGENT_FIRST in record.violations
        self.over_max += rules.DURATION_OVER_MAX in record.violations


def _spans(
    states: Iterable[AgentStateInterval], start: float, end: float, now: float
) -> Iterable[tuple[AgentStateInterval, float, float]]:
    """Each interval clipped to ``[start, end)``; a still-open one runs until ``now``."""
    for state in states:
        lo = max(state.start, start)
        hi = min(end, now if state.end is None else state.end)
        if hi > lo:
            yield state, lo, hi


def _union(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by possibly overlapping spans (an agent in two queues counts once)."""
    total = 0.0
    current: tuple[float, float] | None = None
    for lo, hi in sorted(spans):
        if current is None or lo > current[1]:
            total += current[1] - current[0] if current is not None else 0.0
            current = (lo, hi)
        else:
            current = (current[0], max(current[1], hi))
    return total + (current[1] - current[0] if current is not None else 0.0)


def _floor_time(
    states: Sequence[AgentStateInterval], by: GroupBy, period: Period, now: float
) -> dict[str | None, tuple[float, float, dict[str, float]]]:
    """Logged-in seconds, paused seconds and paused seconds by reason, per agent or queue."""
    logged: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    paused: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    reasons: dict[tuple[str | None, str], list[tuple[float, float]]] = defaultdict(list)
    for state, lo, hi in _spans(states, period.start, period.end, now):
        if state.state == LOGGED_OUT:
            continue
        key: str | None = state.agent if by is GroupBy.AGENT else state.queue
        logged[key].append((lo, hi))
        if state.state == PAUSED:
            paused[key].append((lo, hi))
            reasons[key, state.reason or NO_REASON].append((lo, hi))
    out: dict[str | None, tuple[float, float, dict[str, float]]] = {}
    # An agent's time is a union over queues; a queue's is a sum over agents (agent-seconds).
    measure = _union if by is GroupBy.AGENT else (lambda spans: sum(hi - lo for lo, hi in spans))
    for key, spans in logged.items():
        by_reason = {reason: measure(s) for (k, reason), s in sorted(reasons.items()) if k == key}
        out[key] = (measure(spans), measure(paused.get(key, [])), by_reason)
    return out


def scorecards(
    rows: Iterable[Mapping[str, Any]],
    *,
    by: GroupBy,
    period: Period,
    policies: PolicySet,
    calendar: ServiceCalendar,
    now: float,
    complaints: Sequence[Complaint] = (),
    states: Sequence[AgentStateInterval] = (),
    call_queues: Mapping[str, str | None] | None = None,
) -> ScorecardReport:
    """Per-agent or per-queue scorecards of the calls that arrived in ``period``.

    Args:
        rows: record dicts; those arriving outside the period are ignored.
        by: agents or queues.
        period: from :func:`period_of`.
        policies: thresholds (each call is judged by its queue's policy).
        calendar: the deployment's calendar, for the calendar month of each complaint.
        now: the current time, where an agent state is still open.
        complaints: complaints tagged in the calendar months the period touches
            (:meth:`Period.months`); those in the period count as its complaints.
        states: agent-state intervals overlapping the period.
        call_queues: call id → queue for complaints on calls that are not in ``rows``.
    """
    records, skipped = parse_records(rows)
    tallies: dict[str | None, _Tally] = defaultdict(_Tally)
    queue_of: dict[str, str | None] = dict(call_queues or {})
    for record in records:
        if not period.start <= record.arrived_at < period.end:
            continue
        queue_of[record.call_id] = record.queue
        key = record.agent if by is GroupBy.AGENT else record.queue
        if by is GroupBy.AGENT and key is None:
            continue  # nobody answered: the call is on its queue's card, not an agent's
        tally = tallies[key]
        tally.add(record, policies.for_queue(record.queue))
        if record.agent_name:
            tally.name = record.agent_name

    in_period: dict[str | None, int] = defaultdict(int)
    per_month: dict[tuple[str | None, int, int], int] = defaultdict(int)
    for complaint in complaints:
        key = complaint.agent if by is GroupBy.AGENT else queue_of.get(complaint.call_id)
        if by is GroupBy.QUEUE and complaint.call_id not in queue_of:
            continue  # the call is unknown: no queue to charge it to
        day = calendar.service_day(complaint.tagged_at)
        per_month[key, day.year, day.month] += 1
        if period.start <= complaint.tagged_at < period.end:
            in_period[key] += 1
    months = [(first.year, first.month) for first, _, _ in period.months(calendar)]
    floor = _floor_time(states, by, period, now)

    limit = policies.default.complaints_per_month if by is GroupBy.AGENT else None
    cards: list[Scorecard] = []
    for key in sorted(set(tallies) | set(in_period) | set(floor), key=lambda k: (k is None, k or "")):
        t = tallies.get(key, _Tally())
        logged_in, paused, by_reason = floor.get(key, (0.0, 0.0, {}))
        month_count = max((per_month.get((key, y, m), 0) for y, m in months), default=0)
        cards.append(
            Scorecard(
                by=by,
                key=key,
                name=t.name if by is GroupBy.AGENT else None,
                calls=t.calls,
                inbound=t.inbound,
                outbound=t.outbound,
                answered=t.answered,
                abandoned=t.abandoned,
                answer_judged=t.judged,
                within_rings=t.within,
                time_to_answer_total_s=t.tta_total,
                holds=t.holds,
                holds_over_limit=t.holds_over,
                unconfirmed_transfers=t.unconfirmed,
                agent_hung_up_first=t.agent_first,
                over_talk_max=t.over_max,
                complaints=in_period.get(key, 0),
                complaints_in_month=month_count if by is GroupBy.AGENT else None,
                complaints_limit=limit,
                logged_in_s=logged_in,
                paused_s=paused,
                paused_by_reason=tuple(by_reason.items()),
            )
        )
    return ScorecardReport(period, by, tuple(cards), skipped)


# -- half-hour intervals -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """One half-hour of one local day (``label`` is the local start, ``utc_offset`` tells a
    repeated hour apart on the day the clocks go back)."""

    start: float
    end: float
    label: str
    utc_offset: str
    offered: int
    answered: int
    abandoned: int
    unanswered: int
    within_rings: int
    wait_total_s: float
    waits: int
    after_hours: int  # offered outside service hours: counted here only

    @property
    def within_rings_pct(self) -> float | None:
        """Answered within the ring limit ÷ answered, in percent."""
        return _pct(self.within_rings, self.answered)

    @property
    def avg_wait_s(self) -> float | None:
        """Mean wait of answered (until the answer) and abandoned (until they left) calls."""
        return _avg(self.wait_total_s, self.waits)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "label": self.label,
            "utc_offset": self.utc_offset,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "unanswered": self.unanswered,
            "within_rings": self.within_rings,
            "within_rings_pct": self.within_rings_pct,
            "avg_wait_s": self.avg_wait_s,
            "after_hours": self.after_hours,
        }


@dataclass(frozen=True, slots=True)
class IntervalReport:
    """The half-hours of one local day (46, 48 or 50 of them)."""

    day: date
    queue: str | None
    timezone: str
    rows: tuple[IntervalRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "date": self.day.isoformat(),
            "queue": self.queue,
            "timezone": self.timezone,
            "slot_s": SLOT_S,
            "items": [row.to_dict() for row in self.rows],
        }


def interval_report(
    rows: Iterable[Mapping[str, Any]],
    *,
    day: date,
    calendar: ServiceCalendar,
    policies: PolicySet,
    queue: str | None = None,
) -> IntervalReport:
    """Offered, answered, abandoned, within-rings and mean wait per half-hour of a local day.

    Half-hours are steps of 30 minutes of real time from the day's first instant, so they tile
    a 23-hour or 25-hour DST day exactly; each is labelled with its local wall-clock start.
    """
    lo, hi = calendar.day_bounds(day)
    count = math.ceil((hi - lo) / SLOT_S)
    bins: list[dict[str, float]] = [defaultdict(float) for _ in range(count)]
    records, _ = parse_records(rows)
    for record in records:
        if queue is not None and record.queue != queue:
            continue
        if record.direction is not Direction.INBOUND or record.offered_at is None:
            continue
        if not lo <= record.arrived_at < hi:
            continue
        b = bins[int((record.arrived_at - lo) // SLOT_S)]
        if record.after_hours:
            b["after_hours"] += 1
            continue
        policy = policies.for_queue(record.queue)
        b["offered"] += 1
        if record.outcome is Outcome.ANSWERED:
            b["answered"] += 1
            b["within"] += _within_rings(record, policy)
            if record.time_to_answer_s is not None:
                b["wait"] += record.time_to_answer_s
                b["waits"] += 1
        elif record.outcome is Outcome.ABANDONED:
            b["abandoned"] += 1
            if record.abandoned_after_s is not None:
                b["wait"] += record.abandoned_after_s
                b["waits"] += 1
        else:
            b["unanswered"] += 1
    out: list[IntervalRow] = []
    for index, b in enumerate(bins):
        start = lo + index * SLOT_S
        local = datetime.fromtimestamp(start, calendar.tz)
        out.append(
            IntervalRow(
                start=start,
                end=min(start + SLOT_S, hi),
                label=local.strftime("%H:%M"),
                utc_offset=local.strftime("%z"),
                offered=int(b["offered"]),
                answered=int(b["answered"]),
                abandoned=int(b["abandoned"]),
                unanswered=int(b["unanswered"]),
                within_rings=int(b["within"]),
                wait_total_s=b["wait"],
                waits=int(b["waits"]),
                after_hours=int(b["after_hours"]),
            )
        )
    return IntervalReport(day, queue, str(calendar.tz), tuple(out))


# -- service level -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """One named service-level formula with its parts."""

    id: str
    name: str
    formula: str
    numerator: int
    denominator: int

    @property
    def percent(self) -> float | None:
        """The level in percent; None when nothing was offered."""
        return _pct(self.numerator, self.denominator)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "formula": self.formula,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "percent": self.percent,
        }


@dataclass(frozen=True, slots=True)
class ServiceLevelReport:
    """The four standard service-level formulas over the same calls, side by side."""

    start: float
    end: float
    queue: str | None
    threshold_s: float
    answered: int
    answered_within: int
    abandoned: int
    abandoned_within: int
    unanswered: int  # dropped by the PBX: in no formula, reported for completeness
    levels: tuple[ServiceLevel, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "queue": self.queue,
            "threshold_s": self.threshold_s,
            "answered": self.answered,
            "answered_within": self.answered_within,
            "abandoned": self.abandoned,
            "abandoned_within": self.abandoned_within,
            "abandoned_after": self.abandoned - self.abandoned_within,
            "unanswered": self.unanswered,
            "levels": [level.to_dict() for level in self.levels],
        }


def service_level(
    rows: Iterable[Mapping[str, Any]],
    *,
    start: float,
    end: float,
    policies: PolicySet,
    queue: str | None = None,
) -> ServiceLevelReport:
    """SL1–SL4 of the inbound calls offered in service hours that arrived in ``[start, end)``.

    T is ``rings_limit × ring_seconds`` of each call's queue (9 s by default): answered within T
    means answered on or before the ring limit, the same test as ``answer.within_rings``.
    """
    answered = within = abandoned = abandoned_within = unanswered = 0
    records, _ = parse_records(rows)
    for record in records:
        if queue is not None and record.queue != queue:
            continue
        if not start <= record.arrived_at < end or not _measured(record):
            continue
        policy = policies.for_queue(record.queue)
        if record.outcome is Outcome.ANSWERED:
            answered += 1
            within += _within_rings(record, policy)
        elif record.outcome is Outcome.ABANDONED:
            abandoned += 1
            abandoned_within += _left_within(record.abandoned_after_s, policy)
        else:
            unanswered += 1
    after = abandoned - abandoned_within
    levels = (
        ServiceLevel("SL1", "answered service level", "answered within T ÷ answered", within, answered),
        ServiceLevel(
            "SL2", "offered service level", "answered within T ÷ (answered + abandoned)", within, answered + abandoned
        ),
        ServiceLevel(
            "SL3",
            "service level ignoring short abandons",
            "answered within T ÷ (answered + abandoned after T)",
            within,
            answered + after,
        ),
        ServiceLevel(
            "SL4",
            "service level counting short abandons as met",
            "(answered within T + abandoned within T) ÷ (answered + abandoned)",
            within + abandoned_within,
            answered + abandoned,
        ),
    )
    t = threshold_s(policies.for_queue(queue))
    return ServiceLevelReport(start, end, queue, t, answered, within, abandoned, abandoned_within, unanswered, levels)


# -- callbacks -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Callback:
    """A caller to call back: unanswered in service hours and not reached since (``callback.overdue``)."""

    number: str
    queue: str | None
    first_call_id: str
    first_call_at: float
    last_call_at: float
    attempts: int
    deadline: float
    overdue: bool
    call_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "number": self.number,
            "queue": self.queue,
            "rule": rules.CALLBACK_OVERDUE,
            "first_call_id": self.first_call_id,
            "first_call_at": iso(self.first_call_at),
            "last_call_at": iso(self.last_call_at),
            "attempts": self.attempts,
            "deadline": iso(self.deadline),
            "overdue": self.overdue,
            "call_ids": list(self.call_ids),
        }


def callbacks_due(
    unanswered: Iterable[UnansweredCall],
    reached: Mapping[str, float],
    *,
    policies: PolicySet,
    now: float,
    overdue_only: bool = False,
) -> list[Callback]:
    """Callers waiting for a call back, one entry per number, the most urgent deadline first.

    A caller counts when an inbound call offered in service hours was abandoned or dropped; they
    are reached again by any answered call with their number (either direction) at or after the
    missed call arrived. The deadline runs ``callback_deadline_h`` from the end of the first missed
    call since they were last reached.

    Args:
        unanswered: from ``store.unanswered_callers(since)``.
        reached: from ``store.reached_numbers(since)`` with the same ``since``: number → the latest
            answer of a call with it.
        policies: the deadline of each call's queue.
        now: the current time.
        overdue_only: only callers past their deadline.
    """
    missed: dict[str, list[UnansweredCall]] = defaultdict(list)
    for call in unanswered:
        if call.after_hours or call.outcome not in (Outcome.ABANDONED, Outcome.UNANSWERED):
            continue  # not offered (left in the IVR) or outside hours: no call-back owed
        if reached.get(call.caller, -math.inf) >= call.arrived_at:
            continue
        missed[call.caller].append(call)
    out: list[Callback] = []
    for number, calls in missed.items():
        calls.sort(key=lambda c: (c.arrived_at, c.call_id))
        first = calls[0]
        deadline = first.ended_at + policies.for_queue(first.queue).callback_deadline_h * HOUR_S
        overdue = now >= deadline
        if overdue_only and not overdue:
            continue
        out.append(
            Callback(
                number=number,
                queue=first.queue,
                first_call_id=first.call_id,
                first_call_at=first.arrived_at,
                last_call_at=calls[-1].arrived_at,
                attempts=len(calls),
                deadline=deadline,
                overdue=overdue,
                call_ids=tuple(c.call_id for c in calls),
            )
        )
    out.sort(key=lambda c: (c.deadline, c.number))
    return out


def reached_from_records(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Number → latest answer of an answered call with it, like ``store.reached_numbers``."""
    records, _ = parse_records(rows)
    out: dict[str, float] = {}
    for record in records:
        if record.outcome is not Outcome.ANSWERED or record.direction is Direction.INTERNAL:
            continue
        number = record.caller if record.direction is Direction.INBOUND else record.callee
        if number:
            at = record.answered_at if record.answered_at is not None else record.arrived_at
            out[number] = max(at, out.get(number, -math.inf))
    return out


# -- one call's timeline -----------------------------------------------------------------------------


def _violation_at(rule: str, record: CallRecord, policy: Policy) -> float:
    """When a per-call rule was breached (the moment the limit passed, where there is one)."""
    clock = record.arrived_at
    if policy.answer_clock is AnswerClock.OFFERED and record.offered_at is not None:
        clock = record.offered_at
    answered = record.answered_at
    if rule in (rules.ANSWER_WITHIN_RINGS, rules.ANSWER_FIVE_RINGS):
        rings = policy.rings_limit if rule == rules.ANSWER_WITHIN_RINGS else policy.rings_apology - 1
        return clock + rings * policy.ring_seconds
    if rule == rules.HOLD_TOO_LONG:
        over = [h for h in record.holds if h.seconds > policy.hold_limit_s]
        return over[0].start + policy.hold_limit_s if over else record.ended_at
    if rule in (rules.TRANSFER_UNCONFIRMED, rules.TRANSFER_LOST) and record.transfers:
        unconfirmed = [t for t in record.transfers if not t.confirmed_before_leave] or list(record.transfers)
        return unconfirmed[-1].at if rule == rules.TRANSFER_LOST else unconfirmed[0].at
    if rule == rules.DURATION_OVER_TARGET and answered is not None:
        return answered + policy.talk_target_s
    if rule == rules.DURATION_OVER_MAX and answered is not None:
        return answered + policy.talk_max_s
    return record.ended_at


def timeline(row: Mapping[str, Any], policy: Policy) -> list[dict[str, Any]]:
    """What happened to one call, in time order: arrival, offer, rings no one answered, answer,
    holds, transfers, breaches, the end and the recording.

    Raises:
        KeyError, ValueError: ``row`` is not a call record.
    """
    record = record_from_dict(dict(row))
    events: list[tuple[float, int, dict[str, Any]]] = []

    def add(at: float, event: str, **detail: Any) -> None:
        events.append((at, len(events), {"at": iso(at), "event": event, **detail}))

    add(record.arrived_at, "arrival", caller=record.caller, caller_name=record.caller_name, callee=record.callee)
    if record.offered_at is not None:
        add(record.offered_at, "offer", queue=record.queue)
    for rna in record.ring_no_answer:
        add(rna.at, "ring_no_answer", agent=rna.agent, ring_s=secs(rna.ring_s))
    if record.answered_at is not None:
        add(
            record.answered_at,
            "answer",
            agent=record.agent,
            picked_up_by=record.picked_up_by,
            time_to_answer_s=secs(record.time_to_answer_s),
            rings=record.rings,
        )
    for hold in record.holds:
        add(hold.start, "hold", consult=hold.consult)
        add(hold.end, "hold_end", seconds=secs(hold.seconds), ended_call_on_hold=hold.ended_call_on_hold)
    for transfer in record.transfers:
        add(
            transfer.at,
            "transfer",
            kind=transfer.kind,
            to=transfer.to,
            confirmed_before_leave=transfer.confirmed_before_leave,
        )
        if transfer.target_answered_at is not None:
            add(transfer.target_answered_at, "transfer_answered", to=transfer.to)
    for event, names in (("violation", record.violations), ("notice", record.notices)):
        for rule in names:
            add(_violation_at(rule, record, policy), event, rule=rule)
    add(
        record.ended_at,
        "end",
        outcome=record.outcome.value,
        hangup_by=record.hangup_by.value,
        talk_s=secs(record.talk_s),
    )
    if record.recording:
        add(record.ended_at, "recording", file=record.recording)
    events.sort(key=lambda e: (e[0], e[1]))
    return [detail for _, _, detail in events]
