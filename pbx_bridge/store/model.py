"""What the call store takes and gives back besides call records: filters, stats, QA rows.

Times are epoch seconds (UTC), intervals half-open ``[start, end)``. Every type here is
independent of the database behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pbx_bridge.engine import rules
from pbx_bridge.engine.model import Direction, Outcome, iso

PREFIX_WILDCARD = "*"


def check_service_day(value: str) -> str:
    """Return ``value`` if it is a ``YYYY-MM-DD`` date, else raise ValueError."""
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"service day {value!r} is not a YYYY-MM-DD date") from exc
    if len(value) != 10:  # fromisoformat also takes "20261123", which would never match a stored day
        raise ValueError(f"service day {value!r} is not a YYYY-MM-DD date")
    return value


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls a QA query wants; ``None`` fields do not filter.

    Attributes:
        start: calls that arrived at or after this time.
        end: calls that arrived before this time.
        queue: exact queue name.
        agent: exact agent (``PJSIP/1001``).
        outcome: the call's outcome.
        rule: calls with this rule id among their violations or notices.
        caller: exact caller number, or a prefix ending in ``*`` (``5550*``).
        talk_min: talk time at least this many seconds.
        talk_max: talk time at most this many seconds.
        has_hold: calls with (True) or without (False) any hold.
        has_transfer: calls with (True) or without (False) any transfer.
        direction: inbound, outbound or internal.
        partial: calls rebuilt from an incomplete event stream (True) or complete ones (False).
        service_day: the local service day, ``YYYY-MM-DD``.
    """

    start: float | None = None
    end: float | None = None
    queue: str | None = None
    agent: str | None = None
    outcome: Outcome | None = None
    rule: str | None = None
    caller: str | None = None
    talk_min: float | None = None
    talk_max: float | None = None
    has_hold: bool | None = None
    has_transfer: bool | None = None
    direction: Direction | None = None
    partial: bool | None = None
    service_day: str | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.talk_min is not None and self.talk_max is not None and self.talk_max < self.talk_min:
            raise ValueError(f"talk_max ({self.talk_max}) is below talk_min ({self.talk_min})")
        if self.rule is not None and self.rule not in rules.PER_CALL:
            raise ValueError(f"rule {self.rule!r} is not a per-call rule id (one of {', '.join(rules.PER_CALL)})")
        if self.caller is not None:
            number = self.caller.removesuffix(PREFIX_WILDCARD)
            if not number or PREFIX_WILDCARD in number:
                raise ValueError(f"caller {self.caller!r}: give a number, or a prefix followed by one '*'")
        if self.service_day is not None:
            check_service_day(self.service_day)

    @property
    def caller_prefix(self) -> str | None:
        """The prefix when ``caller`` ends in ``*``, else None."""
        if self.caller is None or not self.caller.endswith(PREFIX_WILDCARD):
            return None
        return self.caller.removesuffix(PREFIX_WILDCARD)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot of the writer's counters, for metrics and logs.

    Attributes:
        pending: items (calls, open-call markers, agent states) waiting in memory, including
            a batch being written.
        written: calls written (a re-written call counts again).
        dropped: items refused because ``max_pending`` was reached (each is logged).
        rejected: items the database refused as invalid (each is logged); the rest of their
            batch was written.
        write_errors: failed batch writes (each kept its batch in memory for a retry).
        retrying: the last write failed and the batch waits for the next attempt.
        last_error: the last write error, for humans.
        batches: batches committed.
        purged: calls deleted by retention since the store was opened.
    """

    pending: int
    written: int
    dropped: int
    rejected: int
    write_errors: int
    retrying: bool
    last_error: str | None
    batches: int
    purged: int


@dataclass(frozen=True, slots=True)
class Complaint:
    """A QA tag saying a call is a complaint against an agent (drives ``agent.complaints``)."""

    call_id: str
    agent: str
    tagged_at: float
    tagged_by: str
    note: str
    call_arrived_at: float | None = None  # None when the call is not stored (yet)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ISO 8601 UTC times."""
        return {
            "call_id": self.call_id,
            "agent": self.agent,
            "tagged_at": iso(self.tagged_at),
            "tagged_by": self.tagged_by,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class AgentStateInterval:
    """One stretch of one agent in one queue in one state (``end`` None: still going)."""

    agent: str
    queue: str
    state: str
    reason: str | None
    start: float
    end: float | None

    def __post_init__(self) -> None:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"agent state {self.agent}/{self.queue}: end {self.end} before start {self.start}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ISO 8601 UTC times."""
        return {
            "agent": self.agent,
            "queue": self.queue,
            "state": self.state,
            "reason": self.reason,
            "start": iso(self.start),
            "end": iso(self.end),
        }


@dataclass(frozen=True, slots=True)
class OpenMarker:
    """A call that was in progress when last seen: what a restarted daemon must settle."""

    call_id: str
    arrived_at: float
    last_seen: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UnansweredCall:
    """An inbound call no agent answered, with a number to call back."""

    call_id: str
    caller: str
    queue: str | None
    arrived_at: float
    ended_at: float
    outcome: Outcome
    after_hours: bool
