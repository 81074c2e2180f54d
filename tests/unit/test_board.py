"""The board: today's numbers, the call-back list and number masking."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from pbx_bridge.board import ALL_QUEUES, Board, mask_number
from pbx_bridge.engine.model import CallRecord, Direction, HangupBy, Outcome
from pbx_bridge.engine.policy import PolicySet
from pbx_bridge.engine.tracker import CallTracker

DAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def record(call_id: str, caller: str, outcome: Outcome, arrived: float, **kw: object) -> CallRecord:
    answered = arrived + 5 if outcome is Outcome.ANSWERED else None
    base = CallRecord(
        call_id=call_id,
        direction=Direction.INBOUND,
        caller=caller,
        caller_name=None,
        callee="600",
        queue="support",
        agent="PJSIP/1001" if answered else None,
        agent_name=None,
        arrived_at=arrived,
        offered_at=arrived,
        answered_at=answered,
        ended_at=arrived + 60,
        time_to_answer_s=5.0 if answered else None,
        rings=2 if answered else None,
        outcome=outcome,
        abandoned_after_s=None if answered else 60.0,
        talk_s=55.0 if answered else None,
        holds=(),
        transfers=(),
        ring_no_answer=(),
        hangup_by=HangupBy.CUSTOMER,
        after_hours=False,
        recording=None,
        violations=() if answered else ("call.unanswered",),
        notices=(),
        partial=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_masking_keeps_prefix_and_last_four_digits() -> None:
    """A mobile number shows its operator prefix and last four digits only."""
    assert mask_number("13812345678") == "138****5678"
    assert mask_number("5550101") == "5**0101"
    assert mask_number("123") == "***"
    assert mask_number(None) is None


def test_today_counts_and_yesterday_is_ignored() -> None:
    """A call from before the current service day finishing late does not move today's numbers."""
    board = Board(PolicySet(), utc_day)
    board.add_record(record("a", "5550001", Outcome.ANSWERED, DAY))
    board.add_record(record("b", "5550002", Outcome.ABANDONED, DAY + 60))
    board.add_record(record("old", "5550003", Outcome.ANSWERED, DAY - 86400))
    tally = board.tallies[ALL_QUEUES].as_dict()
    assert (tally["answered"], tally["abandoned"], tally["within_rings_pct"]) == (1, 1, 100.0)


def test_callback_becomes_overdue_after_the_deadline_unless_reached() -> None:
    """An unanswered caller is overdue 72 h after the missed call, unless a later answered call reached them."""
    board = Board(PolicySet(), utc_day)
    board.add_record(record("m1", "5550009", Outcome.ABANDONED, DAY))
    board.add_record(record("m2", "5550010", Outcome.ABANDONED, DAY))
    board.add_record(
        record("cb", "1001", Outcome.ANSWERED, DAY + 3600, direction=Direction.OUTBOUND, callee="5550010")
    )
    assert board.callbacks_overdue(DAY + 71 * 3600) == {}
    assert board.callbacks_overdue(DAY + 73 * 3600) == {"support": 1, ALL_QUEUES: 1}


def test_callback_list_is_rebuilt_from_the_store_at_start_up() -> None:
    """Missed callers loaded at start-up stay on the list unless reached after the missed call."""
    board = Board(PolicySet(), utc_day)
    board.load_callbacks(
        [("5550020", "support", DAY), ("5550021", "support", DAY)],
        {"5550021": DAY + 10, "5550020": DAY - 10},
    )
    assert [row["caller"] for row in board.callback_list(DAY + 100)] == ["5550020"]


def test_snapshot_without_traffic_has_the_all_queues_entry() -> None:
    """An idle floor still shows the all-queues tile with zero counts."""
    snap = Board(PolicySet(), utc_day).snapshot(CallTracker(), DAY)
    assert snap["queues"][0]["queue"] == ALL_QUEUES
    assert snap["queues"][0]["waiting"] == 0
    assert snap["holds"] == [] and snap["violations"] == []
