"""Today's numbers and the live floor, as one JSON snapshot.

The wallboard, the MQTT queue/agent states and the scrape-time gauges all read
:meth:`Board.snapshot`, so a page reloaded mid-day, a subscriber and Prometheus see the same
figures. State lives here (in the daemon), filled from finished call records (and, at start-up,
from the store) and from the tracker's live calls. Pure: no I/O, times are epoch seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pbx_bridge.engine import rules
from pbx_bridge.engine.model import CallRecord, Direction, LiveViolation, Outcome
from pbx_bridge.engine.policy import PolicySet
from pbx_bridge.engine.tracker import CallTracker

ALL_QUEUES = "*"
NO_QUEUE = "none"
FEED_LENGTH = 50


def mask_number(number: str | None) -> str | None:
    """``13812345678`` → ``138****5678``: enough for a supervisor to recognise a repeat caller."""
    if not number:
        return number
    if len(number) <= 4:
        return "*" * len(number)
    keep_head = 3 if len(number) >= 8 else 1
    return number[:keep_head] + "*" * (len(number) - keep_head - 4) + number[-4:]


@dataclass(slots=True)
class DayTally:
    """Counts for one queue (or all) over one service day."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    unanswered: int = 0
    within_rings: int = 0
    tta_sum: float = 0.0
    over_target: int = 0
    over_max: int = 0
    violations: int = 0

    def add(self, r: CallRecord, rings_limit: int) -> None:
        if r.offered_at is not None or r.outcome is Outcome.ANSWERED:
            self.offered += 1
        if r.outcome is Outcome.ANSWERED:
            self.answered += 1
            if r.time_to_answer_s is not None:
                self.tta_sum += r.time_to_answer_s
            if r.rings is not None and r.rings <= rings_limit:
                self.within_rings += 1
        elif r.outcome is Outcome.ABANDONED:
            self.abandoned += 1
        elif r.outcome is Outcome.UNANSWERED:
            self.unanswered += 1
        if rules.DURATION_OVER_TARGET in r.notices:
            self.over_target += 1
        if rules.DURATION_OVER_MAX in r.violations:
            self.over_max += 1
        self.violations += len(r.violations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "unanswered": self.unanswered,
            "within_rings": self.within_rings,
            # answered within the ring limit ÷ answered (formula named on the tile)
            "within_rings_pct": round(100.0 * self.within_rings / self.answered, 1) if self.answered else None,
            "avg_tta_s": round(self.tta_sum / self.answered, 1) if self.answered else None,
            "over_target": self.over_target,
            "over_max": self.over_max,
            "violations": self.violations,
        }


@dataclass(slots=True)
class Board:
    """Aggregates finished calls per service day and builds the live snapshot."""

    policies: PolicySet
    service_day: Callable[[float], date]
    mask_numbers: bool = True
    day: date | None = None
    tallies: dict[str, DayTally] = field(default_factory=dict)
    feed: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FEED_LENGTH))
    # callback.overdue: unanswered caller number → (first unanswered call end, queue)
    unreached: dict[str, tuple[float, str]] = field(default_factory=dict)

    def _roll(self, ts: float) -> None:
        today = self.service_day(ts)
        if today != self.day:
            self.day = today
            self.tallies.clear()

    def add_record(self, r: CallRecord) -> None:
        """Fold a finished call into today's numbers and the callback list."""
        self._track_callback(r)
        day = self.service_day(r.arrived_at)
        if self.day is None or day > self.day:
            self.day = day
            self.tallies.clear()
        elif day < self.day:
            return  # yesterday's call finishing late: not today's numbers
        if r.direction is not Direction.INBOUND or r.after_hours:
            return
        limit = self.policies.for_queue(r.queue).rings_limit
        self.tallies.setdefault(ALL_QUEUES, DayTally()).add(r, limit)
        self.tallies.setdefault(r.queue or NO_QUEUE, DayTally()).add(r, limit)
        for rule in r.violations:
            self.feed.appendleft(
                {
                    "rule": rule,
                    "call_id": r.call_id,
                    "agent": r.agent,
                    "queue": r.queue,
                    "caller": self._number(r.caller),
                    "ts": r.ended_at,
                    "live": False,
                }
            )

    def add_live_violation(self, v: LiveViolation) -> None:
        self.feed.appendleft(
            {
                "rule": v.rule,
                "call_id": v.call_id,
                "agent": v.agent,
                "queue": v.queue,
                "value": round(v.value, 1),
                "limit": v.limit,
                "ts": v.ts,
                "live": True,
            }
        )

    def _track_callback(self, r: CallRecord) -> None:
        if r.direction is Direction.INBOUND and r.outcome in (Outcome.ABANDONED, Outcome.UNANSWERED):
            if r.caller and not r.after_hours:
                self.unreached.setdefault(r.caller, (r.ended_at, r.queue or NO_QUEUE))
        elif r.outcome is Outcome.ANSWERED:
            number = r.caller if r.direction is Direction.INBOUND else r.callee
            if number:
                self.unreached.pop(number, None)

    def callbacks_overdue(self, now: float) -> dict[str, int]:
        """Unanswered callers not reached within the deadline, per queue (and ``*``)."""
        out: dict[str, int] = {}
        for since, queue in self.unreached.values():
            deadline_s = self.policies.for_queue(queue).callback_deadline_h * 3600
            if now - since > deadline_s:
                out[queue] = out.get(queue, 0) + 1
                out[ALL_QUEUES] = out.get(ALL_QUEUES, 0) + 1
        return out

    def callback_list(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for number, (since, queue) in sorted(self.unreached.items(), key=lambda kv: kv[1][0]):
            deadline = since + self.policies.for_queue(queue).callback_deadline_h * 3600
            rows.append(
                {"caller": number, "queue": queue, "since": since, "deadline": deadline, "overdue": now > deadline}
            )
        return rows

    def _number(self, number: str | None) -> str | None:
        return mask_number(number) if self.mask_numbers else number

    def snapshot(self, tracker: CallTracker, now: float, connected: bool | None = None) -> dict[str, Any]:
        """Everything the wallboard shows, as JSON-ready data."""
        self._roll(now)
        policy = self.policies.default
        floor = tracker.floor
        queues: dict[str, dict[str, Any]] = {}

        def q(name: str) -> dict[str, Any]:
            if name not in queues:
                tally = self.tallies.get(name, DayTally())
                queues[name] = {
                    "queue": name,
                    "waiting": 0,
                    "longest_wait_s": 0.0,
                    "talking": 0,
                    "on_hold": 0,
                    "talking_over_target": 0,
                    "talking_over_max": 0,
                    "agents": {},
                    "unattended_since": None,
                    "callbacks_overdue": 0,
                    **tally.as_dict(),
                }
            return queues[name]

        q(ALL_QUEUES)
        for name in self.tallies:
            q(name)
        for name, live in floor.queues.items():
            entry = q(name)
            entry["waiting"] = len(live.waiting)
            entry["longest_wait_s"] = round(max((now - t for t in live.waiting.values()), default=0.0), 1)
            entry["unattended_since"] = live.unattended_since
            entry["agents"] = {state.value: n for state, n in floor.agents_by_state(name).items()}
            q(ALL_QUEUES)["waiting"] += entry["waiting"]
            q(ALL_QUEUES)["longest_wait_s"] = max(q(ALL_QUEUES)["longest_wait_s"], entry["longest_wait_s"])
        holds = []
        for call in tracker.live_calls():
            name = call.queue or NO_QUEUE
            if call.answered is None:
                continue
            talk = now - call.answered
            pol = self.policies.for_queue(call.queue)
            for entry in (q(name), q(ALL_QUEUES)):
                entry["talking"] += 1
                entry["on_hold"] += bool(call.holds_open)
                entry["talking_over_target"] += talk > pol.talk_target_s
                entry["talking_over_max"] += talk > pol.talk_max_s
            for uid, (start, consult) in call.holds_open.items():
                ch = call.chans.get(uid)
                holds.append(
                    {
                        "call_id": call.call_id,
                        "queue": call.queue,
                        "agent": ch.device if ch is not None else call.agent,
                        "caller": self._number(call.parties[0]),
                        "since": start,
                        "seconds": round(now - start, 1),
                        "consult": consult,
                        # this queue's thresholds (a queue may override the default policy)
                        "warn_s": pol.hold_warn_s,
                        "limit_s": pol.hold_limit_s,
                        "state": "red"
                        if now - start > pol.hold_limit_s
                        else "amber"
                        if now - start > pol.hold_warn_s
                        else "ok",
                    }
                )
        for queue, n in self.callbacks_overdue(now).items():
            q(queue)["callbacks_overdue"] = n
        agents = [
            {
                "agent": m.agent,
                "name": m.name,
                "queue": m.queue,
                "state": m.state.value,
                "reason": m.reason,
                "since": m.since,
                "seconds": round(max(now - m.since, 0.0), 1),
            }
            for m in floor.members.values()
        ]
        return {
            "ts": now,
            "day": self.day.isoformat() if self.day else None,
            "connected": connected,
            "policy": {
                "ring_seconds": policy.ring_seconds,
                "rings_limit": policy.rings_limit,
                "rings_apology": policy.rings_apology,
                "hold_limit_s": policy.hold_limit_s,
                "hold_warn_s": policy.hold_warn_s,
                "talk_target_s": policy.talk_target_s,
                "talk_max_s": policy.talk_max_s,
            },
            "queues": sorted(queues.values(), key=lambda e: (e["queue"] != ALL_QUEUES, e["queue"])),
            "holds": sorted(holds, key=lambda h: h["since"]),
            "agents": sorted(agents, key=lambda a: (a["queue"], a["agent"])),
            "violations": list(self.feed),
        }

    def load(self, records: Iterable[CallRecord]) -> None:
        """Rebuild today's numbers from stored records (daemon start-up)."""
        for r in records:
            self.add_record(r)

    def load_callbacks(self, unanswered: Iterable[tuple[str, str | None, float]], reached: dict[str, float]) -> None:
        """Rebuild the call-back list: (caller, queue, ended_at) of missed calls, and when numbers were reached."""
        for caller, queue, ended in sorted(unanswered, key=lambda u: u[2]):
            if reached.get(caller, 0.0) < ended:
                self.unreached.setdefault(caller, (ended, queue or NO_QUEUE))
