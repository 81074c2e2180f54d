"""What the engine produces: the call record (a public contract) and live outputs.

The record's field names and types never change; fields may be added. Times inside the
engine are epoch seconds (UTC) taken from Asterisk's ``Timestamp`` headers; :meth:`CallRecord.to_dict`
renders them as ISO 8601 UTC strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Outcome(StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up after being offered, before any answer
    UNANSWERED = "unanswered"  # offered, never answered, ended by the PBX (or how it ended was lost: partial)
    NOT_OFFERED = "not_offered"  # the caller left (IVR, announcement) before reaching agents
    FAILED = "failed"  # an outbound call that could not ring (busy, congestion, unavailable)


class HangupBy(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"
    UNKNOWN = "unknown"


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds and a ``Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def secs(value: float | None) -> float | None:
    return None if value is None else round(max(value, 0.0), 3)


@dataclass(frozen=True, slots=True)
class Hold:
    start: float
    end: float
    ended_call_on_hold: bool = False
    consult: bool = False  # the caller was held by an attended transfer's consultation

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "seconds": secs(self.seconds),
            "ended_call_on_hold": self.ended_call_on_hold,
            "consult": self.consult,
        }


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: str  # blind | attended
    from_agent: str | None
    to: str | None
    at: float
    target_answered: bool
    confirmed_before_leave: bool
    target_answered_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "from": self.from_agent,
            "to": self.to,
            "at": iso(self.at),
            "target_answered": self.target_answered,
            "confirmed_before_leave": self.confirmed_before_leave,
            "target_answered_at": iso(self.target_answered_at),
        }


@dataclass(frozen=True, slots=True)
class RingNoAnswer:
    agent: str
    ring_s: float
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "ring_s": secs(self.ring_s), "at": iso(self.at)}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One customer call, final. See the README's "Call record" section for every field."""

    call_id: str
    direction: Direction
    caller: str | None
    caller_name: str | None
    callee: str | None
    queue: str | None
    agent: str | None
    agent_name: str | None
    arrived_at: float
    offered_at: float | None
    answered_at: float | None
    ended_at: float
    time_to_answer_s: float | None
    rings: int | None
    outcome: Outcome
    abandoned_after_s: float | None
    talk_s: float | None
    holds: tuple[Hold, ...]
    transfers: tuple[Transfer, ...]
    ring_no_answer: tuple[RingNoAnswer, ...]
    hangup_by: HangupBy
    after_hours: bool
    recording: str | None
    violations: tuple[str, ...]
    notices: tuple[str, ...]
    partial: bool
    picked_up_by: str | None = None
    linkedids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hold_total_s(self) -> float:
        return sum(h.seconds for h in self.holds)

    @property
    def hold_max_s(self) -> float:
        return max((h.seconds for h in self.holds), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (public contract): ISO times, seconds rounded to the millisecond."""
        return {
            "call_id": self.call_id,
            "direction": self.direction.value,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "callee": self.callee,
            "queue": self.queue,
            "agent": self.agent,
            "agent_name": self.agent_name,
            "arrived_at": iso(self.arrived_at),
            "offered_at": iso(self.offered_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "time_to_answer_s": secs(self.time_to_answer_s),
            "rings": self.rings,
            "outcome": self.outcome.value,
            "abandoned_after_s": secs(self.abandoned_after_s),
            "talk_s": secs(self.talk_s),
            "holds": [h.to_dict() for h in self.holds],
            "hold_count": len(self.holds),
            "hold_total_s": secs(self.hold_total_s),
            "hold_max_s": secs(self.hold_max_s),
            "transfers": [t.to_dict() for t in self.transfers],
            "ring_no_answer": [r.to_dict() for r in self.ring_no_answer],
            "hangup_by": self.hangup_by.value,
            "picked_up_by": self.picked_up_by,
            "after_hours": self.after_hours,
            "recording": self.recording,
            "violations": list(self.violations),
            "notices": list(self.notices),
            "partial": self.partial,
        }


# ---------------------------------------------------------------------------------------------
# Live outputs: what happened to a call just now. The daemon turns them into MQTT messages,
# wallboard pushes and metrics; the record itself arrives with CallEnded.


@dataclass(frozen=True, slots=True)
class CallOffered:
    call_id: str
    ts: float
    queue: str | None


@dataclass(frozen=True, slots=True)
class AgentRinging:
    call_id: str
    ts: float
    agent: str


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    ts: float
    agent: str
    queue: str | None
    time_to_answer_s: float


@dataclass(frozen=True, slots=True)
class HoldStarted:
    call_id: str
    ts: float
    agent: str | None


@dataclass(frozen=True, slots=True)
class HoldEnded:
    call_id: str
    ts: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TransferMade:
    call_id: str
    ts: float
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class CallEnded:
    record: CallRecord


@dataclass(frozen=True, slots=True)
class LiveViolation:
    """A breach that is happening now (a hold past the limit), raised once, before the call ends."""

    rule: str
    call_id: str
    ts: float
    agent: str | None
    queue: str | None
    value: float
    limit: float


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """A queue member entered a new state (the previous one lasted from ``previous_since`` to ``ts``)."""

    agent: str  # the device the member's calls ring, e.g. PJSIP/1001 (also for Local/1001@from-queue/n members)
    name: str
    queue: str
    state: str
    reason: str | None
    ts: float
    previous: str
    previous_reason: str | None
    previous_since: float


Output = (
    CallOffered
    | AgentRinging
    | CallAnswered
    | HoldStarted
    | HoldEnded
    | TransferMade
    | CallEnded
    | LiveViolation
    | AgentStateChanged
)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _req_epoch(value: Any) -> float:
    ts = _epoch(value)
    if ts is None:
        raise ValueError("a required time is missing")
    return ts


def record_from_dict(d: dict[str, Any]) -> CallRecord:
    """The inverse of :meth:`CallRecord.to_dict` (records read back from a store or a feed).

    Raises:
        KeyError, ValueError: the dict is not a call record.
    """
    return CallRecord(
        call_id=d["call_id"],
        direction=Direction(d["direction"]),
        caller=d.get("caller"),
        caller_name=d.get("caller_name"),
        callee=d.get("callee"),
        queue=d.get("queue"),
        agent=d.get("agent"),
        agent_name=d.get("agent_name"),
        arrived_at=_req_epoch(d["arrived_at"]),
        offered_at=_epoch(d.get("offered_at")),
        answered_at=_epoch(d.get("answered_at")),
        ended_at=_req_epoch(d["ended_at"]),
        time_to_answer_s=d.get("time_to_answer_s"),
        rings=d.get("rings"),
        outcome=Outcome(d["outcome"]),
        abandoned_after_s=d.get("abandoned_after_s"),
        talk_s=d.get("talk_s"),
        holds=tuple(
            Hold(
                start=_req_epoch(h["start"]),
                end=_req_epoch(h["end"]),
                ended_call_on_hold=bool(h.get("ended_call_on_hold")),
                consult=bool(h.get("consult")),
            )
            for h in d.get("holds") or []
        ),
        transfers=tuple(
            Transfer(
                kind=t["kind"],
                from_agent=t.get("from"),
                to=t.get("to"),
                at=_req_epoch(t["at"]),
                target_answered=bool(t.get("target_answered")),
                confirmed_before_leave=bool(t.get("confirmed_before_leave")),
                target_answered_at=_epoch(t.get("target_answered_at")),
            )
            for t in d.get("transfers") or []
        ),
        ring_no_answer=tuple(
            RingNoAnswer(agent=r["agent"], ring_s=float(r["ring_s"]), at=_req_epoch(r["at"]))
            for r in d.get("ring_no_answer") or []
        ),
        hangup_by=HangupBy(d["hangup_by"]),
        after_hours=bool(d.get("after_hours")),
        recording=d.get("recording"),
        violations=tuple(d.get("violations") or ()),
        notices=tuple(d.get("notices") or ()),
        partial=bool(d.get("partial")),
        picked_up_by=d.get("picked_up_by"),
    )
