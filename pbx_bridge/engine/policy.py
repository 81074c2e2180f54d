"""The measurable service standard as data: thresholds, with the defaults of SERVICE_STANDARD.md.

A deployment overrides any of them in its config file, globally or per queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pbx_bridge.engine import rules


class AnswerClock(StrEnum):
    """Where the answer clock starts."""

    OFFERED = "offered"  # the call joins a queue or an agent's phone starts ringing (default)
    ARRIVAL = "arrival"  # the call reaches the PBX (includes IVR time)


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds of the per-call and over-time rules."""

    ring_seconds: float = 3.0
    rings_limit: int = 3  # answer.within_rings: breach when rings > this
    rings_apology: int = 5  # answer.five_rings: breach when the caller heard this ring
    hold_limit_s: float = 60.0
    hold_warn_s: float = 45.0  # wallboard amber
    talk_target_s: float = 180.0
    talk_max_s: float = 300.0
    transfer_must_confirm: bool = True
    hangup_customer_first: bool = True
    answer_clock: AnswerClock = AnswerClock.OFFERED
    callback_deadline_h: float = 72.0
    unattended_grace_s: float = 60.0
    complaints_per_month: int = 2

    def rings(self, seconds_to_answer: float) -> int:
        """Number of the ring sounding at ``seconds_to_answer`` (1.0–3.0 s is ring 1, 3.1 s ring 2)."""
        return max(1, math.ceil(round(seconds_to_answer, 3) / self.ring_seconds))


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The default policy and per-queue overrides."""

    default: Policy = field(default_factory=Policy)
    queues: dict[str, Policy] = field(default_factory=dict)

    def for_queue(self, queue: str | None) -> Policy:
        if queue is None:
            return self.default
        return self.queues.get(queue, self.default)

    def with_default(self, **changes: object) -> PolicySet:
        """A copy whose default policy has ``changes`` applied (for "what if" replays)."""
        return PolicySet(replace(self.default, **changes), self.queues)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Measured:
    """What the rules look at, taken from a finished call."""

    inbound: bool
    offered: bool
    answered: bool
    in_hours: bool
    wait_s: float | None  # answer clock → answer, or → the caller leaving when unanswered
    hold_max_s: float
    transfers_unconfirmed: bool
    transfer_lost: bool
    agent_hung_up_first: bool
    talk_s: float | None


def judge(policy: Policy, m: Measured) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return ``(violations, notices)`` as rule ids, in the order of SERVICE_STANDARD.md."""
    hits: list[str] = []
    if m.inbound and m.offered and m.in_hours and m.wait_s is not None:
        ring = policy.rings(m.wait_s)
        if m.answered and ring > policy.rings_limit:
            hits.append(rules.ANSWER_WITHIN_RINGS)
        if ring >= policy.rings_apology:
            hits.append(rules.ANSWER_FIVE_RINGS)
    if m.inbound and m.offered and m.in_hours and not m.answered:
        hits.append(rules.CALL_UNANSWERED)
    if m.hold_max_s > policy.hold_limit_s:
        hits.append(rules.HOLD_TOO_LONG)
    if policy.transfer_must_confirm and m.transfers_unconfirmed:
        hits.append(rules.TRANSFER_UNCONFIRMED)
    if m.transfer_lost:
        hits.append(rules.TRANSFER_LOST)
    if policy.hangup_customer_first and m.answered and m.agent_hung_up_first and not m.transfer_lost:
        hits.append(rules.HANGUP_AGENT_FIRST)
    if m.talk_s is not None and m.talk_s > policy.talk_target_s:
        hits.append(rules.DURATION_OVER_TARGET)
    if m.talk_s is not None and m.talk_s > policy.talk_max_s:
        hits.append(rules.DURATION_OVER_MAX)
    violations = tuple(r for r in hits if r not in rules.NOTICES)
    notices = tuple(r for r in hits if r in rules.NOTICES)
    return violations, notices
