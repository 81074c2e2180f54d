"""Live floor state: queue members by state, callers waiting, stretches with nobody to answer.

Fed by the tracker from ``QueueMember*`` and ``QueueCaller*`` events; read by the daemon for
metrics, the wallboard and MQTT. Pure data, times are the events' timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.engine.model import AgentStateChanged

# Device states as app_queue reports them in ``Status`` (enum ast_device_state).
_DEVICE_IN_USE = {"2", "3", "8"}  # in use, busy, on hold
_DEVICE_RINGING = {"6", "7"}  # ringing, ringing while in use
_DEVICE_GONE = {"4", "5"}  # invalid, unavailable (phone not registered)
UNATTENDED_HISTORY = 200


class AgentState(StrEnum):
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    PAUSED = "paused"
    LOGGED_OUT = "logged_out"


def agent_device(interface: str, state_interface: str | None) -> str:
    """The device a member's calls are answered on, as call records name the agent.

    A FreePBX-style member ``Local/1001@from-queue/n`` rings ``PJSIP/1001``, which its
    ``StateInterface`` names; ``hint:``/``Custom:`` state interfaces name no device.
    """
    if interface.startswith("Local/") and state_interface and not state_interface.startswith("Local/"):
        tech, sep, _ = state_interface.partition("/")
        if sep and ":" not in tech:
            return state_interface
    return interface


@dataclass(slots=True)
class Member:
    """One queue member (an agent in one queue)."""

    queue: str
    interface: str
    name: str
    agent: str  # the device its calls are answered on (see agent_device)
    logged_in: bool = True
    paused: bool = False
    reason: str | None = None
    device: str = "1"
    in_call: bool = False
    state: AgentState = AgentState.AVAILABLE
    shown_reason: str | None = None  # the pause reason of ``state`` (a new reason is a new interval)
    since: float = 0.0  # when ``state`` began

    def derive(self) -> AgentState:
        if not self.logged_in:
            return AgentState.LOGGED_OUT
        if self.paused:
            return AgentState.PAUSED
        if self.device in _DEVICE_RINGING:
            return AgentState.RINGING
        if self.in_call or self.device in _DEVICE_IN_USE:
            return AgentState.ON_CALL
        if self.device in _DEVICE_GONE:
            return AgentState.LOGGED_OUT
        return AgentState.AVAILABLE

    @property
    def attending(self) -> bool:
        """Logged in and not paused: able to take the queue's calls."""
        return self.logged_in and not self.paused


@dataclass(frozen=True, slots=True)
class Unattended:
    queue: str
    start: float
    end: float | None


@dataclass(slots=True)
class QueueLive:
    waiting: dict[str, float] = field(default_factory=dict)  # call id → joined at
    unattended_since: float | None = None


@dataclass(slots=True)
class Floor:
    """Everything the wallboard shows that is not a finished call."""

    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    queues: dict[str, QueueLive] = field(default_factory=dict)
    _by_queue: dict[str, list[Member]] = field(default_factory=dict)  # the same members, by queue
    unattended: list[Unattended] = field(default_factory=list)

    def queue(self, name: str) -> QueueLive:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueLive()
        return q

    def caller_joined(self, queue: str | None, call_id: str, ts: float) -> None:
        if queue:
            self.queue(queue).waiting[call_id] = ts

    def caller_left(self, queue: str | None, call_id: str) -> None:
        if queue:
            self.queue(queue).waiting.pop(call_id, None)

    def call_ended(self, call_id: str) -> None:
        for q in self.queues.values():
            q.waiting.pop(call_id, None)

    def member_event(self, ev: AmiEvent) -> AgentStateChanged | None:
        """Apply a QueueMember* event; return the state change it caused, if any."""
        queue = ev.get("Queue")
        interface = ev.get("Interface")
        if not queue or not interface:
            return None
        key = (queue, interface)
        member = self.members.get(key)
        is_new = member is None
        if member is None:
            agent = agent_device(interface, ev.get("StateInterface"))
            member = Member(queue, interface, ev.get("MemberName") or interface, agent, since=ev.ts)
            self.members[key] = member
            self._by_queue.setdefault(queue, []).append(member)
        if ev.name == "QueueMemberRemoved":
            member.logged_in = False
        elif ev.name == "QueueMemberAdded":
            member.logged_in = True
        if (paused := ev.get("Paused")) is not None:
            member.paused = paused == "1"
            member.reason = ev.get("PausedReason") if member.paused else None
        if (status := ev.get("Status")) is not None:
            member.device = status
        if (in_call := ev.get("InCall")) is not None:
            member.in_call = in_call == "1"
        state = member.derive()
        if is_new:  # first sight: no earlier interval to close
            member.state, member.shown_reason = state, member.reason
        change = None
        if is_new or state is not member.state or (state is AgentState.PAUSED and member.reason != member.shown_reason):
            change = AgentStateChanged(
                agent=member.agent,
                name=member.name,
                queue=queue,
                state=state.value,
                reason=member.reason,
                ts=ev.ts,
                previous=member.state.value,
                previous_reason=member.shown_reason,
                previous_since=member.since,
            )
            member.state = state
            member.shown_reason = member.reason
            member.since = ev.ts
        self._update_unattended(queue, ev.ts)
        return change

    def _update_unattended(self, queue: str, ts: float) -> None:
        q = self.queue(queue)
        attended = any(m.attending for m in self._by_queue.get(queue, ()))
        if attended and q.unattended_since is not None:
            self.unattended.append(Unattended(queue, q.unattended_since, ts))
            del self.unattended[:-UNATTENDED_HISTORY]
            q.unattended_since = None
        elif not attended and q.unattended_since is None:
            q.unattended_since = ts

    def agents_by_state(self, queue: str) -> dict[AgentState, int]:
        counts = dict.fromkeys(AgentState, 0)
        for m in self._by_queue.get(queue, ()):
            counts[m.state] += 1
        return counts
