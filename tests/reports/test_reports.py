"""The pure reports: service-level formulas, DST-safe half-hours, call-backs, scorecards, timelines."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from report_records import T0, hold, inbound, outbound

from pbx_bridge import reports
from pbx_bridge.engine.hours import ServiceCalendar
from pbx_bridge.engine.model import Outcome
from pbx_bridge.engine.policy import Policy, PolicySet
from pbx_bridge.reports import GroupBy, PeriodKind
from pbx_bridge.store.model import AgentStateInterval, Complaint, UnansweredCall

POLICIES = PolicySet()
BERLIN = ServiceCalendar.always_open(ZoneInfo("Europe/Berlin"))
SHANGHAI = ServiceCalendar.always_open(ZoneInfo("Asia/Shanghai"))


def _sl_records() -> list[dict[str, object]]:
    """4 answered (2 within 9 s), 3 abandoned (2 within 9 s), 1 dropped, plus calls no formula counts."""
    return [
        inbound(T0, answer_after=5.0),
        inbound(T0 + 10, answer_after=9.0),  # ring 3 exactly: within
        inbound(T0 + 20, answer_after=9.2),  # ring 4
        inbound(T0 + 30, answer_after=20.0),
        inbound(T0 + 40, abandon_after=4.0),
        inbound(T0 + 50, abandon_after=9.0),
        inbound(T0 + 60, abandon_after=15.0),
        inbound(T0 + 70),  # dropped by the PBX: unanswered
        inbound(T0 + 80, answer_after=2.0, after_hours=True),
        inbound(T0 + 90, abandon_after=1.0, offered_at=None, outcome=Outcome.NOT_OFFERED),
        outbound(T0 + 100, "13800000009"),
        inbound(T0 + 5000, answer_after=1.0),  # outside the range
    ]


def test_service_level_formulas_side_by_side() -> None:
    """SL1–SL4 take answered-within-T and abandons as the four standard formulas say."""
    report = reports.service_level(_sl_records(), start=T0, end=T0 + 1000, policies=POLICIES)
    assert report.threshold_s == 9.0
    assert (report.answered, report.answered_within, report.abandoned, report.abandoned_within) == (4, 2, 3, 2)
    assert report.unanswered == 1
    levels = {level.id: level for level in report.levels}
    assert {k: (v.numerator, v.denominator) for k, v in levels.items()} == {
        "SL1": (2, 4),  # answered within T ÷ answered
        "SL2": (2, 7),  # ÷ (answered + abandoned)
        "SL3": (2, 5),  # ÷ (answered + abandoned after T)
        "SL4": (4, 7),  # (answered within T + abandoned within T) ÷ (answered + abandoned)
    }
    assert [levels[k].percent for k in ("SL1", "SL2", "SL3", "SL4")] == [50.0, 28.6, 40.0, 57.1]
    assert all(level.name and "÷" in level.formula for level in report.levels)


def test_service_level_threshold_follows_the_queue_policy() -> None:
    """T is rings_limit × ring_seconds of the queue's policy: 2 rings of 4 s make T = 8 s."""
    policies = PolicySet(queues={"vip": Policy(ring_seconds=4.0, rings_limit=2)})
    # The engine counts rings with the queue's policy: 8.0 s is ring 2, 8.5 s ring 3.
    rows = [
        inbound(T0, answer_after=8.0, queue="vip", rings=2),
        inbound(T0 + 1, answer_after=8.5, queue="vip", rings=3),
    ]
    report = reports.service_level(rows, start=T0, end=T0 + 100, policies=policies, queue="vip")
    assert report.threshold_s == 8.0
    assert (report.answered, report.answered_within) == (2, 1)


def test_service_level_with_no_calls_has_no_percentages() -> None:
    """With nothing offered every level is None rather than a division by zero."""
    report = reports.service_level([], start=T0, end=T0 + 100, policies=POLICIES)
    assert [level.percent for level in report.levels] == [None] * 4


def test_berlin_spring_forward_day_has_46_half_hours() -> None:
    """On 29 March 2026 Berlin skips 02:00–03:00: 46 half-hours, 01:30 followed by 03:00."""
    report = reports.interval_report([], day=date(2026, 3, 29), calendar=BERLIN, policies=POLICIES)
    labels = [row.label for row in report.rows]
    assert len(labels) == 46
    assert labels[3:5] == ["01:30", "03:00"]
    assert report.rows[0].utc_offset == "+0100" and report.rows[-1].utc_offset == "+0200"
    assert all(row.end - row.start == 1800 for row in report.rows)


def test_berlin_fall_back_day_has_50_half_hours() -> None:
    """On 25 October 2026 Berlin repeats 02:00–03:00: 50 half-hours, told apart by their UTC offset."""
    report = reports.interval_report([], day=date(2026, 10, 25), calendar=BERLIN, policies=POLICIES)
    assert len(report.rows) == 50
    twos = [(row.label, row.utc_offset) for row in report.rows if row.label.startswith("02:")]
    assert twos == [("02:00", "+0200"), ("02:30", "+0200"), ("02:00", "+0100"), ("02:30", "+0100")]


def test_ordinary_day_has_48_half_hours_and_counts_by_arrival() -> None:
    """A plain day has 48 half-hours; a call lands in the half-hour it arrived in, local time."""
    day = date(2026, 3, 29)
    at = datetime(2026, 3, 29, 3, 10, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()  # just after the jump
    rows = [inbound(at, answer_after=5.0), inbound(at + 60, abandon_after=12.0), inbound(at + 120, answer_after=14.0)]
    report = reports.interval_report(rows, day=day, calendar=BERLIN, policies=POLICIES)
    slot = next(row for row in report.rows if row.label == "03:00")
    assert (slot.offered, slot.answered, slot.abandoned, slot.within_rings) == (3, 2, 1, 1)
    assert slot.avg_wait_s == round((5.0 + 12.0 + 14.0) / 3, 3)
    assert slot.within_rings_pct == 50.0
    assert sum(row.offered for row in report.rows) == 3
    plain = reports.interval_report([], day=date(2026, 6, 1), calendar=BERLIN, policies=POLICIES)
    assert len(plain.rows) == 48


def test_intervals_keep_after_hours_calls_apart() -> None:
    """A call offered outside service hours is counted as after_hours only."""
    at = datetime(2026, 6, 1, 7, 5, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    rows = [inbound(at, answer_after=3.0, after_hours=True)]
    report = reports.interval_report(rows, day=date(2026, 6, 1), calendar=SHANGHAI, policies=POLICIES)
    slot = next(row for row in report.rows if row.label == "07:00")
    assert (slot.after_hours, slot.offered, slot.answered) == (1, 0, 0)


def _missed(call_id: str, caller: str, at: float, **kw: object) -> UnansweredCall:
    values: dict[str, object] = {
        "queue": "support",
        "outcome": Outcome.ABANDONED,
        "after_hours": False,
    }
    values.update(kw)
    return UnansweredCall(call_id, caller, values["queue"], at, at + 20, values["outcome"], values["after_hours"])  # type: ignore[arg-type]


def test_callback_reached_by_a_later_answered_outbound_call() -> None:
    """A caller reached by an answered outbound call after the missed call leaves the list; others stay."""
    missed = [
        _missed("m1", "13800000001", T0),
        _missed("m2", "13800000002", T0 + 100),
        _missed("m3", "13800000003", T0 + 200),
    ]
    rows = [
        outbound(T0 + 3600, "13800000001"),  # called back and answered: reached
        outbound(T0 + 3600, "13800000002", answered=False),  # tried, no answer: still owed
        outbound(T0 - 3600, "13800000003"),  # answered before the missed call: does not count
    ]
    reached = reports.reached_from_records(rows)
    due = reports.callbacks_due(missed, reached, policies=POLICIES, now=T0 + 7200)
    assert [c.number for c in due] == ["13800000002", "13800000003"]
    first = due[0]
    assert first.deadline == T0 + 100 + 20 + 72 * 3600
    assert not first.overdue
    later = reports.callbacks_due(missed, reached, policies=POLICIES, now=first.deadline, overdue_only=True)
    assert [c.number for c in later] == ["13800000002"]
    assert later[0].overdue and later[0].to_dict()["rule"] == "callback.overdue"


def test_callback_by_inbound_answer_and_repeat_attempts() -> None:
    """An answered inbound call from the number reaches it too; repeated misses are one entry with attempts."""
    missed = [
        _missed("a1", "13900000001", T0),
        _missed("a2", "13900000001", T0 + 600, outcome=Outcome.UNANSWERED),
        _missed("b1", "13900000002", T0),
        _missed("n1", "13900000003", T0, after_hours=True),  # outside hours: no call back owed
        _missed("n2", "13900000004", T0, outcome=Outcome.NOT_OFFERED),  # left in the IVR
    ]
    reached = reports.reached_from_records([inbound(T0 + 900, answer_after=3.0, caller="13900000002")])
    due = reports.callbacks_due(missed, reached, policies=POLICIES, now=T0 + 1000)
    assert [(c.number, c.attempts, c.call_ids) for c in due] == [("13900000001", 2, ("a1", "a2"))]
    assert due[0].first_call_at == T0 and due[0].last_call_at == T0 + 600


def test_callback_deadline_follows_the_queue_policy() -> None:
    """A queue with a 24 h call-back deadline is overdue after a day."""
    policies = PolicySet(queues={"vip": Policy(callback_deadline_h=24.0)})
    due = reports.callbacks_due([_missed("v", "1", T0, queue="vip")], {}, policies=policies, now=T0 + 86_400 + 20)
    assert due[0].overdue and due[0].deadline == T0 + 20 + 86_400


def test_periods_are_local_and_dst_safe() -> None:
    """Days, ISO weeks and months start at local midnight; March 2026 in Berlin is 743 hours long."""
    day = reports.period_of(PeriodKind.DAY, date(2026, 3, 29), BERLIN)
    assert day.end - day.start == 23 * 3600
    week = reports.period_of(PeriodKind.WEEK, date(2026, 3, 29), BERLIN)
    assert (week.first, week.last) == (date(2026, 3, 23), date(2026, 3, 29))
    month = reports.period_of(PeriodKind.MONTH, date(2026, 3, 29), BERLIN)
    assert (month.first, month.last) == (date(2026, 3, 1), date(2026, 3, 31))
    assert month.end - month.start == (31 * 24 - 1) * 3600
    assert month.start == datetime(2026, 3, 1, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    spanning = reports.period_of(PeriodKind.WEEK, date(2026, 12, 30), BERLIN)
    assert [m[0] for m in spanning.months(BERLIN)] == [date(2026, 12, 1), date(2027, 1, 1)]


def _day() -> reports.Period:
    return reports.period_of(PeriodKind.DAY, SHANGHAI.service_day(T0), SHANGHAI)


def test_agent_scorecard_counts() -> None:
    """An agent's card counts answers within rings, holds over the limit and the engine's breaches."""
    rows = [
        inbound(T0, answer_after=5.0, holds=(hold(T0 + 20, 70.0), hold(T0 + 100, 10.0))),
        inbound(T0 + 10, answer_after=12.0, violations=("answer.within_rings",)),
        inbound(T0 + 20, answer_after=3.0, violations=("transfer.unconfirmed", "hangup.agent_first")),
        inbound(T0 + 30, answer_after=3.0, talk_s=400.0, violations=("duration.over_max",)),
        inbound(T0 + 40, answer_after=3.0, after_hours=True),  # not judged on answer speed
        inbound(T0 + 50, answer_after=3.0, agent="PJSIP/1002"),
        inbound(T0 + 60, abandon_after=5.0),  # nobody answered: on no agent's card
    ]
    report = reports.scorecards(
        rows, by=GroupBy.AGENT, period=_day(), policies=POLICIES, calendar=SHANGHAI, now=T0 + 3600
    )
    cards = {card.key: card for card in report.items}
    assert set(cards) == {"PJSIP/1001", "PJSIP/1002"}
    card = cards["PJSIP/1001"]
    assert (card.calls, card.answered, card.answer_judged, card.within_rings) == (5, 5, 4, 3)
    assert card.within_rings_pct == 75.0
    assert card.avg_time_to_answer_s == round((5 + 12 + 3 + 3) / 4, 3)
    assert (card.holds, card.holds_over_limit) == (2, 1)
    assert (card.unconfirmed_transfers, card.agent_hung_up_first, card.over_talk_max) == (1, 1, 1)


def test_queue_scorecard_includes_unanswered_calls() -> None:
    """A queue's card counts every call of the queue, abandoned ones included."""
    rows = [inbound(T0, answer_after=5.0), inbound(T0 + 10, abandon_after=5.0), inbound(T0 + 20, queue=None)]
    report = reports.scorecards(rows, by=GroupBy.QUEUE, period=_day(), policies=POLICIES, calendar=SHANGHAI, now=T0)
    assert [(c.key, c.calls, c.abandoned) for c in report.items] == [("support", 2, 1), (None, 1, 0)]


def test_complaints_breach_in_a_calendar_month() -> None:
    """Two complaints tagged in one calendar month breach agent.complaints, even if one is outside the period."""
    period = reports.period_of(PeriodKind.DAY, date(2026, 11, 24), SHANGHAI)
    earlier = datetime(2026, 11, 2, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    last_month = datetime(2026, 10, 30, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    complaints = [
        Complaint("x1", "PJSIP/1001", period.start + 3600, "qa", "rude"),
        Complaint("x2", "PJSIP/1001", earlier, "qa", "hung up"),
        Complaint("x3", "PJSIP/1002", period.start + 60, "qa", "rude"),
        Complaint("x4", "PJSIP/1002", last_month, "qa", "rude"),
    ]
    report = reports.scorecards(
        [],
        by=GroupBy.AGENT,
        period=period,
        policies=POLICIES,
        calendar=SHANGHAI,
        now=period.end,
        complaints=complaints,
    )
    cards = {card.key: card for card in report.items}
    assert (cards["PJSIP/1001"].complaints, cards["PJSIP/1001"].complaints_in_month) == (1, 2)
    assert cards["PJSIP/1001"].complaints_breached is True
    assert cards["PJSIP/1002"].complaints_breached is False


def test_floor_time_clips_to_the_period_and_now() -> None:
    """Agent-state time is clipped to the period, an open interval runs until now, overlaps count once."""
    period = _day()
    start = period.start
    states = [
        AgentStateInterval("PJSIP/1001", "support", "available", None, start - 600, start + 600),
        AgentStateInterval("PJSIP/1001", "sales", "available", None, start, start + 300),
        AgentStateInterval("PJSIP/1001", "support", "paused", "training", start + 600, None),
        AgentStateInterval("PJSIP/1001", "support", "logged_out", None, start - 9000, start - 600),
    ]
    report = reports.scorecards(
        [], by=GroupBy.AGENT, period=period, policies=POLICIES, calendar=SHANGHAI, now=start + 1000, states=states
    )
    card = report.items[0]
    assert (card.logged_in_s, card.paused_s, dict(card.paused_by_reason)) == (1000.0, 400.0, {"training": 400.0})


def test_scorecards_skip_rows_that_are_not_records() -> None:
    """A stored row that is not a call record is counted as skipped, not fatal."""
    report = reports.scorecards(
        [{"call_id": "broken"}, inbound(T0, answer_after=1.0)],
        by=GroupBy.AGENT,
        period=_day(),
        policies=POLICIES,
        calendar=SHANGHAI,
        now=T0,
    )
    assert report.skipped == 1 and report.items[0].calls == 1


def test_timeline_orders_events_and_places_breaches() -> None:
    """A timeline is sorted by time and puts a hold breach where the hold passed its limit."""
    row = inbound(
        T0,
        answer_after=12.0,
        ended_at=T0 + 200,
        talk_s=187.0,
        holds=(hold(T0 + 30, 70.0),),
        violations=("answer.within_rings", "hold.too_long"),
    )
    events = reports.timeline(row, Policy())
    kinds = [e["event"] for e in events]
    assert kinds == ["arrival", "offer", "violation", "answer", "hold", "violation", "hold_end", "end"]
    assert events[2]["rule"] == "answer.within_rings"
    hold_breach = events[5]
    assert hold_breach["rule"] == "hold.too_long"
    assert datetime.fromisoformat(hold_breach["at"]).timestamp() == pytest.approx(T0 + 30 + 60)
