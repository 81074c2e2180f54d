"""Hand-made call records for the report tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pbx_bridge.engine.model import CallRecord, Direction, HangupBy, Hold, Outcome
from pbx_bridge.engine.policy import Policy

T0 = 1_795_400_000.0  # 2026-11-23T08:13:20Z


def inbound(
    at: float,
    *,
    answer_after: float | None = None,
    abandon_after: float | None = None,
    queue: str | None = "support",
    agent: str | None = "PJSIP/1001",
    caller: str = "13800000001",
    **changes: Any,
) -> dict[str, Any]:
    """The record dict of an inbound queue call: answered after ``answer_after`` s, or abandoned, or dropped."""
    policy = Policy()
    offered = at + 1.0
    answered = offered + answer_after if answer_after is not None else None
    ended = (answered + 60.0) if answered is not None else offered + (abandon_after or 30.0)
    if answer_after is not None:
        outcome = Outcome.ANSWERED
    elif abandon_after is not None:
        outcome = Outcome.ABANDONED
    else:
        outcome = Outcome.UNANSWERED
    record = CallRecord(
        call_id=f"c{at:.3f}",
        direction=Direction.INBOUND,
        caller=caller,
        caller_name=None,
        callee="600",
        queue=queue,
        agent=agent if answered is not None else None,
        agent_name=None,
        arrived_at=at,
        offered_at=offered,
        answered_at=answered,
        ended_at=ended,
        time_to_answer_s=answer_after,
        rings=policy.rings(answer_after) if answer_after is not None else None,
        outcome=outcome,
        abandoned_after_s=abandon_after if outcome is not Outcome.ANSWERED else None,
        talk_s=60.0 if answered is not None else None,
        holds=(),
        transfers=(),
        ring_no_answer=(),
        hangup_by=HangupBy.CUSTOMER if outcome is not Outcome.UNANSWERED else HangupBy.SYSTEM,
        after_hours=False,
        recording=None,
        violations=(),
        notices=(),
        partial=False,
    )
    return replace(record, **changes).to_dict()


def outbound(at: float, callee: str, *, answered: bool = True, agent: str = "PJSIP/1004") -> dict[str, Any]:
    """The record dict of an agent's outbound call to ``callee``."""
    record = CallRecord(
        call_id=f"o{at:.3f}",
        direction=Direction.OUTBOUND,
        caller="1004",
        caller_name=None,
        callee=callee,
        queue=None,
        agent=agent,
        agent_name=None,
        arrived_at=at,
        offered_at=at,
        answered_at=at + 5.0 if answered else None,
        ended_at=at + 65.0,
        time_to_answer_s=None,
        rings=None,
        outcome=Outcome.ANSWERED if answered else Outcome.FAILED,
        abandoned_after_s=None,
        talk_s=60.0 if answered else None,
        holds=(),
        transfers=(),
        ring_no_answer=(),
        hangup_by=HangupBy.CUSTOMER,
        after_hours=False,
        recording=None,
        violations=(),
        notices=(),
        partial=False,
    )
    return record.to_dict()


def hold(start: float, seconds: float) -> Hold:
    """A hold of ``seconds`` from ``start``."""
    return Hold(start, start + seconds)
