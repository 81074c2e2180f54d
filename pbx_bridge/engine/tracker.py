"""The call tracker: AMI events in, call records and live outputs out.

Theory of operation
-------------------
*Channels* are keyed by ``Uniqueid`` (names change on masquerade and are reused after a
restart). A *call* is one customer's conversation with the centre: every channel whose
``Linkedid`` points into it — the customer's leg, queue attempts to agents, Local-channel
halves, an attended transfer's consultation — folds into it. Asterisk rewrites a channel's
``Linkedid`` when it joins a bridge with an older channel and announces nothing, so every event
is checked for a changed ``Linkedid`` and the two calls are merged (the one that has the
customer survives). Call pickup and a blonde transfer's recall work this way.

The *customer* is the first real (non-Local) channel that is not an agent phone: the caller for
inbound calls, the called party for outbound ones. Agent phones are told apart by their endpoint
name (``[pbx] internal_endpoints``) or because a queue named them as a member.

What the record measures, and from which events (see ``AMI_NOTES.md`` and the real captures):

* offered — ``QueueCallerJoin``, or the first ``DialBegin`` towards an agent phone (direct calls)
* answered — ``DialEnd ANSWER`` towards an agent phone (through Local pairs), else
  ``AgentConnect``, ``Pickup`` or the customer being bridged with an agent. The customer's own
  channel going Up means nothing: the dialplan answers it for the IVR or the queue.
* ring-no-answer — ``DialEnd NOANSWER`` / ``AgentRingNoAnswer`` before the answer
* holds — ``Hold``/``Unhold`` on an agent leg (queue music is not a hold); an attended
  transfer's ``*2`` raises ``Hold`` too and is closed by ``AttendedTransfer``; a hold still open
  when the call ends lasts until the end.
* transfers — ``BlindTransfer`` / ``AttendedTransfer`` with ``Result: Success``; whether the target
  answered follows the target's dial (or the customer being bridged with someone new).
* who hung up — the last ``HangupRequest`` on the customer or on a real channel bridged with the
  customer at that moment; a transferer's hangup that completes a transfer does not count; a
  ``SoftHangupRequest`` with cause 4 or a ``Shutdown`` means the system ended the call.
* the call ends when the customer's channel hangs up (a call with no customer: when its last
  channel does). Its record is judged against the policy of its queue.

Call phases are data (:data:`TRANSITIONS`); an event that does not fit is counted in
:class:`EngineStats`, never silently dropped.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pbx_bridge.ami.events import UNKNOWN_VALUES, AmiEvent, Snapshot, StreamStart
from pbx_bridge.engine.live import Floor
from pbx_bridge.engine.model import (
    AgentRinging,
    CallAnswered,
    CallEnded,
    CallOffered,
    CallRecord,
    Direction,
    HangupBy,
    Hold,
    HoldEnded,
    HoldStarted,
    LiveViolation,
    Outcome,
    Output,
    RingNoAnswer,
    Transfer,
    TransferMade,
)
from pbx_bridge.engine.policy import Measured, PolicySet, judge
from pbx_bridge.engine.rules import HOLD_TOO_LONG

OpenHours = Callable[[str | None, float], bool]

UP = 6
SHUTDOWN_CAUSE = "4"
RECORDING_VARIABLE = "MIXMONITOR_FILENAME"
# Events the tracker has no use for; skipped before any work. Everything else is dispatched
# or counted as unhandled.
IGNORED_EVENTS = frozenset(
    {
        "Newexten",
        "RTCPSent",
        "RTCPReceived",
        "DeviceStateChange",
        "DialState",
        "NewConnectedLine",
        "MusicOnHoldStart",  # also plays in queues: not a hold (Hold/Unhold are)
        "MusicOnHoldStop",
        "DTMFBegin",
        "DTMFEnd",
        "BridgeCreate",
        "BridgeMerge",
        "LocalOptimizationBegin",  # the swap itself shows as BridgeEnter with SwapUniqueid
        "LocalOptimizationEnd",  # its Success field is wrong in 22.10 (says No after a swap)
        "MixMonitorStart",
        "MixMonitorStop",
        "NewAccountCode",
        "FullyBooted",
        "SuccessfulAuth",
        "ChallengeSent",
        "InvalidPassword",
        "FailedACL",
        "Registry",
        "PeerStatus",
        "ContactStatus",
        "Reload",
        "AgentDump",
        "Cdr",
        "Cel",
        "DAHDIChannel",
        "ChanSpyStart",
        "ChanSpyStop",
    }
)
# What the AMI edge may skim (``FrameParser(skim=…)``): events this tracker reads by name only,
# and ``VarSet``, of which it reads only the recording variable — a ``VarSet`` carrying that
# name is parsed in full.
NAME_ONLY_EVENTS = IGNORED_EVENTS | {"VarSet"}
NAME_ONLY_UNLESS = (RECORDING_VARIABLE.encode("ascii"),)
TOMBSTONES = 20_000
RECENT_BRIDGES = 2_000
LIVE_CHECK_EVERY_S = 1.0


class Phase(StrEnum):
    """Where a call stands."""

    ARRIVED = "arrived"  # in the PBX, not yet offered to agents (IVR, announcements)
    WAITING = "waiting"  # offered: queued or an agent's phone ringing
    TALKING = "talking"  # connected to an agent
    HELD = "held"  # an agent has put the caller on hold
    ENDED = "ended"


class Trigger(StrEnum):
    OFFER = "offer"
    ANSWER = "answer"
    HOLD = "hold"
    UNHOLD = "unhold"
    END = "end"


TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (Phase.ARRIVED, Trigger.OFFER): Phase.WAITING,
    (Phase.WAITING, Trigger.OFFER): Phase.WAITING,  # the next agent, the next queue
    (Phase.ARRIVED, Trigger.ANSWER): Phase.TALKING,  # answered with no offer seen (partial, originate)
    (Phase.WAITING, Trigger.ANSWER): Phase.TALKING,
    (Phase.TALKING, Trigger.HOLD): Phase.HELD,
    (Phase.HELD, Trigger.HOLD): Phase.HELD,  # a second agent leg holds too (consultation)
    (Phase.HELD, Trigger.UNHOLD): Phase.TALKING,
    (Phase.ARRIVED, Trigger.END): Phase.ENDED,
    (Phase.WAITING, Trigger.END): Phase.ENDED,
    (Phase.TALKING, Trigger.END): Phase.ENDED,
    (Phase.HELD, Trigger.END): Phase.ENDED,
}


@dataclass(slots=True)
class EngineStats:
    """Counters the daemon exports; every event is either used, ignored by type, or counted here."""

    events: int = 0
    calls_ended: int = 0
    unhandled: dict[str, int] = field(default_factory=dict)  # event types the tracker does not know
    unplaced: dict[str, int] = field(default_factory=dict)  # known events that fit no call / no state
    merges: int = 0
    stream_starts: int = 0

    def count_unplaced(self, reason: str) -> None:
        self.unplaced[reason] = self.unplaced.get(reason, 0) + 1

    @property
    def unplaced_total(self) -> int:
        return sum(self.unplaced.values())


def device_of(channel: str) -> str:
    """``PJSIP/1003-00000011`` → ``PJSIP/1003``; ``Local/1004@agents-00000000;1`` → ``Local/1004@agents``."""
    name = channel.split(";", 1)[0]
    head, sep, tail = name.rpartition("-")
    # All hex digits: stripping them leaves nothing (the same test as all(c in hexdigits), in C).
    if sep and tail and not tail.lower().strip("0123456789abcdef"):
        return head
    return name


def _member_endpoint(interface: str) -> str:
    """``PJSIP/1001`` and ``Local/1001@from-queue/n`` → ``1001``."""
    return endpoint_of(interface.split("/n", 1)[0] if "@" in interface else interface)


def endpoint_of(device: str) -> str:
    """``PJSIP/1003`` → ``1003``; ``Local/1004@agents`` → ``1004``."""
    rest = device.split("/", 1)[-1]
    return rest.split("@", 1)[0]


@dataclass(slots=True, eq=False)
class Dial:
    src: Chan | None
    dest: Chan
    start: float
    end: float | None = None
    status: str | None = None


@dataclass(slots=True, eq=False)
class Chan:
    uid: str
    name: str
    linkedid: str
    call: Call
    local: int  # 0 for a real channel, 1 or 2 for a Local half
    internal: bool  # an agent phone or extension (not a trunk / customer)
    state: int | None = None
    caller_num: str | None = None
    caller_name: str | None = None
    exten: str | None = None
    bridge: str | None = None
    partner: Chan | None = None  # the other half of a Local pair
    dials: list[Dial] = field(default_factory=list)

    @property
    def device(self) -> str:
        return device_of(self.name)


@dataclass(slots=True, eq=False)
class TransferState:
    kind: str
    from_agent: str | None
    to: str | None
    at: float
    seq: int
    transferers: frozenset[str]
    watch: str | None = None  # blind: the transferee, whose next dial goes to the target
    target_dial: Dial | None = None
    target_answered: bool = False
    target_answered_at: float | None = None
    confirmed: bool = False

    def freeze(self) -> Transfer:
        return Transfer(
            kind=self.kind,
            from_agent=self.from_agent,
            to=self.to,
            at=self.at,
            target_answered=self.target_answered,
            confirmed_before_leave=self.confirmed,
            target_answered_at=self.target_answered_at,
        )


@dataclass(slots=True, eq=False)
class Call:
    call_id: str
    arrived: float
    partial: bool
    phase: Phase = Phase.ARRIVED
    chans: dict[str, Chan] = field(default_factory=dict)
    linkedids: set[str] = field(default_factory=set)
    customer: Chan | None = None
    origin: Chan | None = None  # the first real channel (the agent, for outbound calls)
    queue: str | None = None
    offered: float | None = None
    answered: float | None = None
    agent: str | None = None
    agent_name: str | None = None
    picked_up_by: str | None = None
    holds_open: dict[str, tuple[float, bool]] = field(default_factory=dict)  # agent leg → (start, consult)
    holds: list[Hold] = field(default_factory=list)
    transfers: list[TransferState] = field(default_factory=list)
    rna: list[RingNoAnswer] = field(default_factory=list)
    hangup_by: HangupBy | None = None
    hangup_chan: str | None = None
    complete_reason: str | None = None
    system_hangup: bool = False  # a SoftHangupRequest hit the customer before any HangupRequest
    shutdown: bool = False
    failed: bool = False
    connected_seq: int = -1  # event sequence number when the customer was last bridged with an agent
    recording: str | None = None
    live_raised: set[str] = field(default_factory=set)
    hours_key: tuple[str | None, float] | None = None  # (queue, arrived) ``in_hours`` was computed for
    in_hours: bool = True

    @property
    def parties(self) -> tuple[str | None, str | None, str | None]:
        """``(caller, caller_name, callee)``: the customer and the number they dialled, or for an
        outbound call the agent and the number the agent dialled. Names as Asterisk last knew them."""
        cust, origin = self.customer, self.origin
        if cust is None:
            return (origin.caller_num, origin.caller_name, origin.exten) if origin else (None, None, None)
        if self.direction is Direction.OUTBOUND and origin is not None:
            return origin.caller_num, origin.caller_name, origin.exten or cust.caller_num
        return cust.caller_num, cust.caller_name, cust.exten

    @property
    def direction(self) -> Direction:
        if self.customer is None:
            return Direction.INTERNAL
        if self.origin is not None and self.origin is not self.customer:
            return Direction.OUTBOUND
        return Direction.INBOUND


@dataclass(slots=True)
class Bridge:
    members: set[str] = field(default_factory=set)
    history: list[str] = field(default_factory=list)


class CallTracker:
    """Feeds on AMI events in stream order; returns what each event changed.

    Args:
        policies: thresholds, per queue.
        is_open: ``(queue, epoch) -> bool``, whether a time is inside service hours;
            ``None`` treats every call as inside service hours.
        internal_endpoints: regex matching the endpoint part of agent phones' channel names.
    """

    def __init__(
        self,
        policies: PolicySet | None = None,
        is_open: OpenHours | None = None,
        internal_endpoints: str = r"^\d{2,6}$",
    ) -> None:
        self.policies = policies or PolicySet()
        self._is_open = is_open
        self._internal_re = re.compile(internal_endpoints)
        self._members: set[str] = set()  # endpoints named as queue members
        self.stats = EngineStats()
        self.floor = Floor()
        self._chans: dict[str, Chan] = {}
        self._by_name: dict[str, Chan] = {}
        self._calls_by_lid: dict[str, Call] = {}
        self._calls: dict[str, Call] = {}
        self._held: dict[str, Call] = {}  # calls that put a hold on (_check_live drops those done with it)
        self._dials: dict[str, Dial] = {}  # by destination uniqueid
        self._bridges: dict[str, Bridge] = {}
        self._old_bridges: OrderedDict[str, Bridge] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()  # channels of finished calls
        self._finished: OrderedDict[str, None] = OrderedDict()  # linkedids of finished calls
        self._used_ids: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._now = 0.0
        self._next_live_check = 0.0
        self._out: list[Output] = []
        self._handlers: dict[str, Callable[[AmiEvent], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_snapshot_only,
            "NewCallerid": self._on_snapshot_only,
            "VarSet": self._on_varset,
            "Rename": self._on_rename,
            "LocalBridge": self._on_local_bridge,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_leave,
            "AgentCalled": self._on_agent_called,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "AgentRingNoAnswer": self._on_agent_rna,
            "Pickup": self._on_pickup,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BridgeDestroy": self._on_bridge_destroy,
            "Hold": self._on_hold,
            "Unhold": self._on_unhold,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_soft_hangup_request,
            "Hangup": self._on_hangup,
            "Shutdown": self._on_shutdown,
            "QueueMemberAdded": self._on_member,
            "QueueMemberRemoved": self._on_member,
            "QueueMemberPause": self._on_member,
            "QueueMemberStatus": self._on_member,
            "QueueMemberPenalty": self._on_member,
            "QueueMemberRinginuse": self._on_member,
        }

    # ------------------------------------------------------------------ public API

    def feed(self, item: AmiEvent | StreamStart) -> list[Output]:
        """Apply one event; return the outputs it caused, in order."""
        out: list[Output] = []
        self._out = out
        if isinstance(item, StreamStart):
            self.stats.stream_starts += 1
            if self.stats.events:
                # A reconnect: events may have been lost while we were away.
                for call in self._calls.values():
                    call.partial = True
            return out
        stats = self.stats
        stats.events += 1
        # Only Asterisk's own stamps move the clock: an unstamped event carries a guess (the
        # bridge's clock right after login), which may be far from the PBX's.
        if item.stamped and item.ts > self._now:
            self._now = item.ts
        name = item.name
        if name in IGNORED_EVENTS:
            return out
        handler = self._handlers.get(name)
        if handler is None:
            stats.unhandled[name] = stats.unhandled.get(name, 0) + 1
            return out
        self._seq += 1
        handler(item)
        now = self._now
        if now >= self._next_live_check:
            self._next_live_check = now + LIVE_CHECK_EVERY_S
            self._check_live(now)
        return out

    def tick(self, now: float) -> list[Output]:
        """Raise live breaches due by ``now`` (the daemon calls this with the wall clock)."""
        self._out = []
        self._check_live(max(now, self._now))
        return self._out

    def close_all(self, reason: str = "end of stream") -> list[Output]:
        """End every open call as partial (end of a replay, or a call lost across a reconnect)."""
        self._out = []
        for call in list(self._calls.values()):
            call.partial = True
            self._finish(call, self._now)
        return self._out

    def resync(self, live_uniqueids: Iterable[str], ts: float) -> list[Output]:
        """After a reconnect: end as partial every open call none of whose channels is still up."""
        self._out = []
        alive = set(live_uniqueids)
        for call in list(self._calls.values()):
            if not alive.intersection(call.chans):
                call.partial = True
                self._finish(call, max(ts, self._now))
        return self._out

    def draft(self, call_id: str) -> CallRecord | None:
        """The record of an open call as if it ended now (partial): what a restart can settle."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        return self._record(call, self._now, partial=True)

    @property
    def open_calls(self) -> list[Call]:
        return list(self._calls.values())

    def live_calls(self) -> list[Call]:
        """Open calls that have a customer (what the wallboard shows)."""
        return [c for c in self._calls.values() if c.customer is not None]

    # ------------------------------------------------------------------ channels and calls

    def _chan(self, ev: AmiEvent, snap: Snapshot | None = None, born: bool = False) -> Chan | None:
        if snap is None and not ev.chan_parsed:
            # Most events name a channel already tracked: refresh it straight from the headers
            # (the fields Snapshot.from_headers reads, read the same way) without a Snapshot.
            h = ev.headers
            uid = h.get("Uniqueid")
            if not uid:
                return None
            ch = self._chans.get(uid)
            if ch is not None:
                state = h.get("ChannelState", "")
                name = h.get("CallerIDName")
                num = h.get("CallerIDNum")
                return self._refresh(
                    ch,
                    h.get("Linkedid") or uid,
                    int(state) if state.isdigit() else None,
                    h.get("Channel", ""),
                    None if name is None or name in UNKNOWN_VALUES else name,
                    None if num is None or num in UNKNOWN_VALUES else num,
                )
        snap = snap or ev.chan
        if snap is None:
            return None
        ch = self._chans.get(snap.uniqueid)
        if ch is None:
            if snap.uniqueid in self._gone:
                return None
            if not born and snap.linkedid in self._finished:
                # A leg of a call that has ended (first seen after it ended, e.g. behind a gap):
                # it must not start a second record of the same call.
                self.stats.count_unplaced("event of a finished call")
                return None
            return self._new_chan(snap, ev.ts, born)
        return self._refresh(ch, snap.linkedid, snap.state, snap.channel, snap.caller_name, snap.caller_num)

    def _refresh(  # noqa: PLR0917 - once per event: positional arguments are the cheap call
        self,
        ch: Chan,
        linkedid: str,
        state: int | None,
        channel: str,
        caller_name: str | None,
        caller_num: str | None,
    ) -> Chan:
        """Apply what an event says of a channel already tracked."""
        if linkedid != ch.linkedid:
            self._relink(ch, linkedid)
        if state is not None:
            ch.state = state
        if channel and channel != ch.name:
            self._rename(ch, channel)
        if caller_name is not None:
            ch.caller_name = caller_name
        if caller_num is not None:
            ch.caller_num = caller_num
        return ch

    def _new_chan(self, snap: Snapshot, ts: float, born: bool) -> Chan:
        call = self._calls_by_lid.get(snap.linkedid)
        if call is None:
            partial = not born or snap.uniqueid != snap.linkedid
            call = self._new_call(snap.linkedid, ts, partial)
        name = snap.channel
        local = 0
        if name.startswith("Local/"):
            local = 2 if name.endswith(";2") else 1
        dev = device_of(name)
        endpoint = endpoint_of(dev)
        internal = not local and (endpoint in self._members or bool(self._internal_re.match(endpoint)))
        ch = Chan(
            uid=snap.uniqueid,
            name=name,
            linkedid=snap.linkedid,
            call=call,
            local=local,
            internal=internal,
            state=snap.state,
            caller_num=snap.caller_num,
            caller_name=snap.caller_name,
            exten=snap.exten,
        )
        self._chans[ch.uid] = ch
        self._by_name[name] = ch
        call.chans[ch.uid] = ch
        self._classify(call, ch, ts)
        return ch

    def _classify(self, call: Call, ch: Chan, ts: float) -> None:
        """Decide the customer and the origin as real channels join a call.

        The origin is the channel that started the call. When the bridge joined mid-call
        (partial), the first leg it happens to see may be an agent's, so only the channel whose
        Uniqueid is its Linkedid (the oldest of the call) can be the origin then.
        """
        if ch.local:
            return
        if call.origin is None and (not call.partial or ch.uid == ch.linkedid):
            call.origin = ch
        if call.customer is None and not ch.internal:
            call.customer = ch

    def _new_call(self, key: str, ts: float, partial: bool) -> Call:
        call_id = key
        n = 1
        while call_id in self._used_ids:
            n += 1
            call_id = f"{key}-{n}"
        self._used_ids[call_id] = None
        if len(self._used_ids) > TOMBSTONES:
            self._used_ids.popitem(last=False)
        call = Call(call_id=call_id, arrived=ts, partial=partial)
        call.linkedids.add(key)
        self._calls[call_id] = call
        self._calls_by_lid[key] = call
        return call

    def _relink(self, ch: Chan, linkedid: str) -> None:
        """Asterisk rewrote this channel's Linkedid (it joined a bridge with an older channel)."""
        ch.linkedid = linkedid
        old = ch.call
        new = self._calls_by_lid.get(linkedid)
        if new is None:
            old.linkedids.add(linkedid)
            self._calls_by_lid[linkedid] = old
            return
        if new is old:
            return
        if old.customer is not None and new.customer is not None:
            # Two customers' calls meet (a conference, a transfer between two callers): only
            # this channel changes sides.
            self._move_chan(ch, new)
            return
        keep, drop = (new, old) if new.customer is not None or old.customer is None else (old, new)
        self._merge(keep, drop)

    def _move_chan(self, ch: Chan, to: Call) -> None:
        del ch.call.chans[ch.uid]
        ch.call = to
        to.chans[ch.uid] = ch

    def _merge(self, keep: Call, drop: Call) -> None:
        self.stats.merges += 1
        for ch in drop.chans.values():
            ch.call = keep
            keep.chans[ch.uid] = ch
        for lid in drop.linkedids:
            self._calls_by_lid[lid] = keep
        keep.linkedids |= drop.linkedids
        keep.recording = keep.recording or drop.recording
        self._calls.pop(drop.call_id, None)

    def _rename(self, ch: Chan, new_name: str) -> None:
        if self._by_name.get(ch.name) is ch:
            del self._by_name[ch.name]
        ch.name = new_name
        self._by_name[new_name] = ch

    def _real_behind(self, ch: Chan | None, depth: int = 0) -> Chan | None:
        """The real channel a Local half leads to (``;1`` → ``;2`` → what ``;2`` dialled)."""
        if ch is None or not ch.local:
            return ch
        other = ch.partner
        if other is None or depth > 4:
            return None
        target: Chan | None = None
        for dial in reversed(other.dials):
            if dial.status == "ANSWER":
                target = dial.dest
                break
        if target is None and other.dials:
            target = other.dials[-1].dest
        if target is None and other.bridge is not None:
            for uid in self._bridge(other.bridge).members:
                peer = self._chans.get(uid)
                if peer is not None and peer is not other:
                    target = peer
                    break
        return self._real_behind(target, depth + 1)

    def _component(self, start: Chan) -> list[Chan]:
        """Channels joined to ``start`` through bridges and Local pairs."""
        seen = {start.uid}
        stack = [start]
        out: list[Chan] = []
        while stack:
            ch = stack.pop()
            out.append(ch)
            peers: list[Chan] = []
            if ch.bridge is not None:
                peers.extend(self._chans[u] for u in self._bridge(ch.bridge).members if u in self._chans)
            if ch.partner is not None:
                peers.append(ch.partner)
            for peer in peers:
                if peer.uid not in seen:
                    seen.add(peer.uid)
                    stack.append(peer)
        return out

    def _agents_with_customer(self, call: Call) -> list[Chan]:
        if call.customer is None:
            return []
        return [c for c in self._component(call.customer) if not c.local and c is not call.customer]

    def _bridge(self, bid: str) -> Bridge:
        bridge = self._bridges.get(bid) or self._old_bridges.get(bid)
        if bridge is None:
            bridge = self._bridges[bid] = Bridge()
        return bridge

    def _live(self, call: Call, output: Output) -> None:
        """Report a live change, for customer calls only.

        A call with no customer (an agent's recall leg, a picker's channel) may still be merged
        into a customer's call and vanish; naming it in a live output would leave a call that
        never ends. Its record is still produced if it ends on its own.
        """
        if call.customer is not None:
            self._out.append(output)

    def _move(self, call: Call, trigger: Trigger) -> bool:
        nxt = TRANSITIONS.get((call.phase, trigger))
        if nxt is None:
            self.stats.count_unplaced(f"{trigger.value} while {call.phase.value}")
            return False
        call.phase = nxt
        return True

    # ------------------------------------------------------------------ event handlers

    def _on_newchannel(self, ev: AmiEvent) -> None:
        self._chan(ev, born=True)

    def _on_snapshot_only(self, ev: AmiEvent) -> None:
        self._chan(ev)

    def _on_varset(self, ev: AmiEvent) -> None:
        if ev.headers.get("Variable") != RECORDING_VARIABLE:
            return
        ch = self._chan(ev)
        if ch is not None:
            ch.call.recording = ev.get("Value")

    def _on_rename(self, ev: AmiEvent) -> None:
        ch = self._chans.get(ev.headers.get("Uniqueid", ""))
        new = ev.get("Newname")
        if ch is None or new is None:
            self.stats.count_unplaced("Rename of an unknown channel")
            return
        self._rename(ch, new)

    def _on_local_bridge(self, ev: AmiEvent) -> None:
        one = self._chan(ev, Snapshot.from_headers(ev.headers, "LocalOne"))
        two = self._chan(ev, Snapshot.from_headers(ev.headers, "LocalTwo"))
        if one is None or two is None:
            self.stats.count_unplaced("LocalBridge without both halves")
            return
        one.partner, two.partner = two, one

    def _on_dial_begin(self, ev: AmiEvent) -> None:
        src = self._chan(ev)  # None when Asterisk originates (a transfer recall)
        dest = self._chan(ev, ev.dest)
        if dest is None:
            self.stats.count_unplaced("DialBegin without a destination")
            return
        dial = Dial(src=src, dest=dest, start=ev.ts)
        self._dials[dest.uid] = dial
        if src is not None:
            src.dials.append(dial)
        call = dest.call
        if src is not None:
            for t in call.transfers:
                if t.watch == src.uid and t.target_dial is None:
                    t.target_dial = dial
        real = self._real_behind(dest)
        if call.answered is None and real is not None and real.internal and call.direction is Direction.INBOUND:
            self._offer(call, ev.ts)
            self._live(call, AgentRinging(call.call_id, ev.ts, real.device))
        elif call.answered is None and call.direction is Direction.OUTBOUND and dest is call.customer:
            self._offer(call, ev.ts)

    def _on_dial_end(self, ev: AmiEvent) -> None:
        dest_uid = ev.headers.get("DestUniqueid", "")
        dial = self._dials.get(dest_uid)
        if dial is None:
            # Asterisk's own dials (a consultation's Local ;1, a recall) may end without a
            # DialBegin and without a source channel; anything else is worth counting.
            if dest_uid not in self._gone and ev.chan is not None:
                self.stats.count_unplaced("DialEnd without DialBegin")
            return
        if dial.status is not None:
            return  # Asterisk repeats DialEnd (NOANSWER then CANCEL, CANCEL twice)
        self._chan(ev)
        dial.status = status = ev.headers.get("DialStatus", "")
        dial.end = ev.ts
        dest = dial.dest
        call = dest.call
        if status == "ANSWER":
            real = self._real_behind(dest)
            if call.answered is None:
                if call.direction is Direction.OUTBOUND and dest is call.customer:
                    self._answer(call, ev.ts, call.origin)
                elif real is not None and real.internal and real is not call.customer:
                    self._answer(call, ev.ts, real)
            for t in call.transfers:
                if t.target_dial is dial and not t.target_answered:
                    t.target_answered = True
                    t.target_answered_at = ev.ts
        elif call.answered is None:
            if status == "NOANSWER":
                real = self._real_behind(dest)
                if real is not None and real.internal:
                    self._ring_no_answer(call, real.device, ev.ts - dial.start, ev.ts)
            elif dest is call.customer and status in ("BUSY", "CONGESTION", "CHANUNAVAIL"):
                call.failed = True

    def _ring_no_answer(self, call: Call, agent: str, ring_s: float, ts: float) -> None:
        for r in call.rna:
            if r.agent == agent and abs(r.at - ts) < 1.0:
                return  # AgentRingNoAnswer and DialEnd NOANSWER describe the same ring
        call.rna.append(RingNoAnswer(agent=agent, ring_s=ring_s, at=ts))

    def _offer(self, call: Call, ts: float) -> None:
        if call.answered is not None:
            return  # a transfer into a queue after the answer is not the call's offer
        first = call.offered is None
        if first:
            call.offered = ts
        if call.phase is Phase.ARRIVED:
            self._move(call, Trigger.OFFER)
        if first:
            self._live(call, CallOffered(call.call_id, ts, call.queue))

    def _answer(self, call: Call, ts: float, agent: Chan | None) -> None:
        if not self._move(call, Trigger.ANSWER):
            return
        call.answered = ts
        # Partial calls date their answer by inference; keep arrival ≤ offer ≤ answer.
        call.arrived = min(call.arrived, ts)
        if call.offered is not None and call.offered > ts:
            call.offered = ts
        call.agent = agent.device if agent is not None else None
        start = self._clock_start(call)
        self._live(call, CallAnswered(call.call_id, ts, call.agent or "", call.queue, max(ts - start, 0.0)))

    def _clock_start(self, call: Call) -> float:
        policy = self.policies.for_queue(call.queue)
        if policy.answer_clock == "offered" and call.offered is not None:
            return call.offered
        return call.arrived

    def _on_queue_join(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        queue = ev.get("Queue")
        if call.queue is None:
            call.queue = queue
        self._offer(call, ev.ts)
        self.floor.caller_joined(queue, call.call_id, ev.ts)

    def _on_queue_leave(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is not None:
            self.floor.caller_left(ev.get("Queue"), ch.call.call_id)

    def _on_agent_called(self, ev: AmiEvent) -> None:
        self._chan(ev)
        self._learn_member(ev.get("Interface"))

    def _learn_member(self, interface: str | None) -> None:
        if interface:
            self._members.add(_member_endpoint(interface))

    def _on_agent_connect(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        dest = self._chan(ev, ev.dest)
        real = self._real_behind(dest)
        if call.answered is None:
            self._answer(call, ev.ts, real)
        if call.agent_name is None and call.agent is not None:
            call.agent_name = self._member_name(call.agent, ev.get("Interface"), ev.get("MemberName"))

    def _member_name(self, agent: str, interface: str | None, member: str | None) -> str | None:
        """The queue member name of the answering phone.

        After a pickup, AgentConnect still names the member whose phone rang; the picker's
        own name comes from the queue members we know.
        """
        endpoint = endpoint_of(agent)
        if interface and member and _member_endpoint(interface) == endpoint:
            return member
        for m in self.floor.members.values():
            if _member_endpoint(m.interface) == endpoint:
                return m.name
        return None

    def _on_agent_complete(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        call.complete_reason = ev.get("Reason")
        talk = ev.get("TalkTime")
        if call.answered is None and call.partial and talk and talk.isdigit():
            # We joined after the answer: app_queue's TalkTime dates it (1 s resolution).
            answered = ev.ts - int(talk)
            call.arrived = min(call.arrived, answered)
            agent = self._real_behind(self._chan(ev, ev.dest))
            self._answer(call, answered, agent)
            if agent is None and (interface := ev.get("Interface")):
                call.agent = interface
            call.queue = call.queue or ev.get("Queue")

    def _on_agent_rna(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None or ch.call.answered is not None:
            return
        real = self._real_behind(self._chan(ev, ev.dest))
        agent = real.device if real is not None else ev.get("Interface")
        ring_ms = ev.get("RingTime")
        if agent and ring_ms and ring_ms.isdigit():
            self._ring_no_answer(ch.call, agent, int(ring_ms) / 1000.0, ev.ts)

    def _on_pickup(self, ev: AmiEvent) -> None:
        picker = self._chan(ev)
        target = self._by_name.get(ev.headers.get("TargetChannel", ""))
        if picker is None or target is None:
            self.stats.count_unplaced("Pickup of an unknown channel")
            return
        call = target.call
        if picker.call is not call:
            if picker.call.customer is None:
                self._merge(call, picker.call)
            else:
                self._move_chan(picker, call)
        if call.answered is None:
            self._answer(call, ev.ts, picker)
            call.picked_up_by = picker.device

    def _on_bridge_enter(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        bid = ev.headers.get("BridgeUniqueid")
        if ch is None or not bid:
            return
        bridge = self._bridge(bid)
        swap = ev.headers.get("SwapUniqueid")
        if swap:
            bridge.members.discard(swap)
        if ch.bridge is not None and ch.bridge != bid:
            self._bridge(ch.bridge).members.discard(ch.uid)
        bridge.members.add(ch.uid)
        bridge.history.append(ch.uid)
        ch.bridge = bid
        call = ch.call
        agents = [a for a in self._agents_with_customer(call) if a.internal]
        if not agents:
            return
        call.connected_seq = self._seq
        if call.answered is None and call.direction is Direction.INBOUND:
            self._answer(call, ev.ts, agents[0])
        for t in call.transfers:
            if not t.target_answered and any(a.device != t.from_agent for a in agents):
                t.target_answered = True
                t.target_answered_at = ev.ts

    def _on_bridge_leave(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        bid = ev.headers.get("BridgeUniqueid")
        if ch is None or not bid:
            return
        bridge = self._bridge(bid)
        if ch.bridge != bid and ch.uid not in bridge.history:
            # It was in this bridge before we started listening (a partial call).
            bridge.history.append(ch.uid)
            self._infer_answer_from(ch.call, bridge)
        bridge.members.discard(ch.uid)
        if ch.bridge == bid:
            ch.bridge = None

    def _infer_answer_from(self, call: Call, bridge: Bridge) -> None:
        """A partial call whose customer shared a bridge with an agent was answered before we saw it."""
        if call.answered is not None or not call.partial or call.customer is None:
            return
        if call.customer.uid not in bridge.history:
            return
        for uid in bridge.history:
            ch = self._chans.get(uid)
            if ch is not None and ch.internal:
                self._answer(call, call.arrived, ch)
                return

    def _on_bridge_destroy(self, ev: AmiEvent) -> None:
        bid = ev.headers.get("BridgeUniqueid", "")
        bridge = self._bridges.pop(bid, None)
        if bridge is not None:
            # Kept a while: an AttendedTransfer may name a bridge already torn down.
            self._old_bridges[bid] = bridge
            if len(self._old_bridges) > RECENT_BRIDGES:
                self._old_bridges.popitem(last=False)

    def _on_hold(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        if call.answered is None and call.partial and ch.internal and ch is not call.customer:
            self._answer(call, call.arrived, ch)  # an agent holding the caller had answered earlier
        if ch is call.customer or ch.local or call.answered is None:
            self.stats.count_unplaced("Hold not on an answered agent leg")
            return
        if ch.uid in call.holds_open:
            return  # phones repeat holds
        # The ``*2`` attended-transfer feature raises Hold without MusicClass; a phone's hold
        # key sends one. Informational only: both count as holds.
        call.holds_open[ch.uid] = (ev.ts, "MusicClass" not in ev.headers)
        self._held[call.call_id] = call
        self._move(call, Trigger.HOLD)
        self._live(call, HoldStarted(call.call_id, ev.ts, ch.device))

    def _on_unhold(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        # A REFER (blind transfer) raises Unhold with no Hold before it: nothing to close.
        self._close_hold(ch.call, ch.uid, ev.ts)

    def _close_hold(self, call: Call, uid: str, ts: float, ended_call: bool = False, by_transfer: bool = False) -> None:
        opened = call.holds_open.pop(uid, None)
        if opened is None:
            return
        start, consult = opened
        hold = Hold(start=start, end=ts, ended_call_on_hold=ended_call, consult=consult or by_transfer)
        call.holds.append(hold)
        if not call.holds_open and call.phase is Phase.HELD and not ended_call:
            self._move(call, Trigger.UNHOLD)
        self._live(call, HoldEnded(call.call_id, ts, hold.seconds))

    def _on_blind_transfer(self, ev: AmiEvent) -> None:
        if ev.headers.get("Result") != "Success":
            self.stats.count_unplaced("BlindTransfer not successful")
            return
        transferer = self._chan(ev, Snapshot.from_headers(ev.headers, "Transferer"))
        transferee = self._chan(ev, Snapshot.from_headers(ev.headers, "Transferee"))
        anchor = transferer or transferee
        if anchor is None:
            self.stats.count_unplaced("BlindTransfer of unknown channels")
            return
        call = anchor.call
        if transferer is not None:
            self._close_hold(call, transferer.uid, ev.ts)
        self._add_transfer(
            call,
            TransferState(
                kind="blind",
                from_agent=transferer.device if transferer else None,
                to=ev.get("Extension"),
                at=ev.ts,
                seq=self._seq,
                transferers=frozenset({transferer.uid} if transferer else ()),
                watch=transferee.uid if transferee else None,
            ),
        )

    def _on_attended_transfer(self, ev: AmiEvent) -> None:
        h = ev.headers
        if h.get("Result") != "Success":
            self.stats.count_unplaced("AttendedTransfer not successful")
            return
        orig = self._chan(ev, Snapshot.from_headers(h, "OrigTransferer"))
        second = self._chan(ev, Snapshot.from_headers(h, "SecondTransferer"))
        transferee = self._chan(ev, Snapshot.from_headers(h, "Transferee"))
        anchor = transferee or orig or second
        if anchor is None:
            self.stats.count_unplaced("AttendedTransfer of unknown channels")
            return
        call = anchor.call
        transferers = {c.uid for c in (orig, second) if c is not None}
        for uid in transferers:
            self._close_hold(call, uid, ev.ts, by_transfer=True)
        target, dial = self._attended_target(ev, transferers, transferee)
        answered = (dial is not None and dial.status == "ANSWER") or (
            dial is None and target is not None and target.state == UP
        )
        from_chan = orig or second
        self._add_transfer(
            call,
            TransferState(
                kind="attended",
                from_agent=from_chan.device if from_chan else None,
                to=target.device if target is not None else h.get("DestApp"),
                at=ev.ts,
                seq=self._seq,
                transferers=frozenset(transferers),
                target_dial=dial,
                target_answered=answered,
                target_answered_at=dial.end if answered and dial is not None else None,
                confirmed=answered,
            ),
        )

    def _attended_target(
        self, ev: AmiEvent, transferers: set[str], transferee: Chan | None
    ) -> tuple[Chan | None, Dial | None]:
        """Who the agent consulted: named by TransferTarget*, else whoever was in the bridges.

        Asterisk 22 sends no TransferTarget* fields for a ``*2`` transfer through a Local
        consultation channel; the target is then the far side of the Local pair that shared the
        consultation bridge with the transferer.
        """
        h = ev.headers
        candidates: list[Chan] = []
        named = self._chans.get(h.get("TransferTargetUniqueid", ""))
        if named is not None:
            candidates.append(named)
        skip = set(transferers) | ({transferee.uid} if transferee else set())
        for key in ("SecondBridgeUniqueid", "OrigBridgeUniqueid"):
            bid = h.get(key)
            if not bid:
                continue
            for uid in self._bridge(bid).history:
                ch = self._chans.get(uid)
                if ch is not None and uid not in skip and ch is not ch.call.customer:
                    candidates.append(ch)
        for ch in candidates:
            real = self._real_behind(ch)
            if real is None or real.uid in skip or real is real.call.customer:
                continue
            return real, self._dials.get(real.uid)
        return None, None

    def _add_transfer(self, call: Call, transfer: TransferState) -> None:
        call.transfers.append(transfer)
        if call.hangup_chan in transfer.transferers:
            # The transferer's hangup completed the transfer; it did not end the caller's call.
            call.hangup_by = None
            call.hangup_chan = None
        self._live(call, TransferMade(call.call_id, transfer.at, transfer.freeze()))

    def _on_hangup_request(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None or ch.local:
            return  # Local optimisation raises HangupRequest on ``;2``: not a party hanging up
        call = ch.call
        if ch is call.customer:
            call.hangup_by, call.hangup_chan = HangupBy.CUSTOMER, ch.uid
        elif (ch.internal and ch in self._agents_with_customer(call)) or (
            # an outbound call's agent giving up before the customer answers
            call.answered is None and ch is call.origin and call.direction is Direction.OUTBOUND
        ):
            call.hangup_by, call.hangup_chan = HangupBy.AGENT, ch.uid

    def _on_soft_hangup_request(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        if ev.headers.get("Cause") == SHUTDOWN_CAUSE:
            call.shutdown = True
        elif ch is call.customer and call.hangup_by is None:
            call.system_hangup = True

    def _on_shutdown(self, ev: AmiEvent) -> None:
        for call in self._calls.values():
            call.shutdown = True

    def _on_hangup(self, ev: AmiEvent) -> None:
        ch = self._chan(ev)
        if ch is None:
            return
        call = ch.call
        if ch.uid in call.holds_open:
            self._close_hold(call, ch.uid, ev.ts, ended_call=True)
        self._forget_chan(ch)
        if ch is call.customer or (call.customer is None and not call.chans):
            self._finish(call, ev.ts)

    def _forget_chan(self, ch: Chan) -> None:
        self._chans.pop(ch.uid, None)
        if self._by_name.get(ch.name) is ch:
            del self._by_name[ch.name]
        ch.call.chans.pop(ch.uid, None)
        dial = self._dials.pop(ch.uid, None)
        if dial is not None and dial.src is not None and dial in dial.src.dials:
            # Keep the dial on its source while the source lives: transfers and Local
            # resolution read it; it goes with the source channel.
            pass
        self._gone[ch.uid] = None
        if len(self._gone) > TOMBSTONES:
            self._gone.popitem(last=False)

    def _on_member(self, ev: AmiEvent) -> None:
        self._learn_member(ev.get("Interface") or ev.get("StateInterface"))
        change = self.floor.member_event(ev)
        if change is not None:
            self._out.append(change)

    # ------------------------------------------------------------------ live breaches

    def _check_live(self, now: float) -> None:
        # Only calls with a hold on (not every open call, every second of stream time).
        for call_id, call in list(self._held.items()):
            if not call.holds_open or self._calls.get(call_id) is not call:
                del self._held[call_id]
                continue
            limit = self.policies.for_queue(call.queue).hold_limit_s
            for uid, (start, _) in call.holds_open.items():
                key = f"{HOLD_TOO_LONG}:{uid}:{start}"
                if now - start > limit and key not in call.live_raised:
                    call.live_raised.add(key)
                    ch = call.chans.get(uid)
                    self._live(
                        call,
                        LiveViolation(
                            rule=HOLD_TOO_LONG,
                            call_id=call.call_id,
                            ts=start + limit,
                            agent=ch.device if ch else call.agent,
                            queue=call.queue,
                            value=now - start,
                            limit=limit,
                        ),
                    )

    # ------------------------------------------------------------------ the record

    def _finish(self, call: Call, ts: float) -> None:
        if call.phase is Phase.ENDED:
            return
        ts = max(ts, call.arrived, call.answered or call.arrived)  # an end never before the call's own times
        self._move(call, Trigger.END)
        for uid in list(call.holds_open):
            self._close_hold(call, uid, ts, ended_call=True)
        for ch in list(call.chans.values()):
            self._forget_chan(ch)
        for lid in call.linkedids:
            if self._calls_by_lid.get(lid) is call:
                del self._calls_by_lid[lid]
            self._finished[lid] = None
        while len(self._finished) > TOMBSTONES:
            self._finished.popitem(last=False)
        self._calls.pop(call.call_id, None)
        self.floor.call_ended(call.call_id)
        self.stats.calls_ended += 1
        self._out.append(CallEnded(self._record(call, ts)))

    def _record(self, call: Call, ended: float, partial: bool | None = None) -> CallRecord:
        policy = self.policies.for_queue(call.queue)
        direction = call.direction
        inbound = direction is Direction.INBOUND
        answered = call.answered is not None
        start = self._clock_start(call)
        hangup_by = self._hangup_by(call)
        if answered:
            outcome = Outcome.ANSWERED
        elif direction is Direction.OUTBOUND:
            outcome = Outcome.FAILED if call.failed else Outcome.UNANSWERED
        elif call.offered is None:
            outcome = Outcome.NOT_OFFERED
        elif hangup_by is HangupBy.CUSTOMER or (hangup_by is HangupBy.UNKNOWN and not call.partial):
            # The caller hung up, or the signalling names nobody: when the PBX ends a waiting
            # call it says so, so an unattributed end of a waiting caller is theirs.
            outcome = Outcome.ABANDONED
        else:
            outcome = Outcome.UNANSWERED  # the PBX dropped it, or how it ended was not seen
        tta = call.answered - start if call.answered is not None else None
        waited = tta if answered else (ended - start if call.offered is not None else None)
        talk = ended - call.answered if call.answered is not None else None
        transfers = tuple(t.freeze() for t in call.transfers)
        last = call.transfers[-1] if call.transfers else None
        lost = (
            answered
            and last is not None
            and not last.target_answered
            and call.connected_seq <= last.seq
            and hangup_by is not HangupBy.SYSTEM
        )
        in_hours = self._in_hours(call)
        holds = tuple(sorted(call.holds, key=lambda h: h.start))
        violations, notices = judge(
            policy,
            Measured(
                inbound=inbound,
                offered=call.offered is not None,
                answered=answered,
                in_hours=in_hours,
                wait_s=waited,
                hold_max_s=max((h.seconds for h in holds), default=0.0),
                transfers_unconfirmed=any(not t.confirmed_before_leave for t in transfers),
                transfer_lost=lost,
                agent_hung_up_first=hangup_by is HangupBy.AGENT,
                talk_s=talk,
            ),
        )
        caller, caller_name, callee = call.parties
        return CallRecord(
            call_id=call.call_id,
            direction=direction,
            caller=caller,
            caller_name=caller_name,
            callee=callee,
            queue=call.queue,
            agent=call.agent,
            agent_name=call.agent_name,
            arrived_at=call.arrived,
            offered_at=call.offered,
            answered_at=call.answered,
            ended_at=ended,
            time_to_answer_s=tta if inbound else None,
            rings=policy.rings(tta) if tta is not None and inbound else None,
            outcome=outcome,
            abandoned_after_s=waited if outcome is Outcome.ABANDONED else None,
            talk_s=talk,
            holds=holds,
            transfers=transfers,
            ring_no_answer=tuple(call.rna),
            hangup_by=hangup_by,
            after_hours=not in_hours,
            recording=call.recording,
            violations=violations,
            notices=notices,
            partial=call.partial if partial is None else partial,
            picked_up_by=call.picked_up_by,
            linkedids=tuple(sorted(call.linkedids)),
        )

    def _in_hours(self, call: Call) -> bool:
        """Whether the call arrived in service hours; kept per call (drafts ask again and again)."""
        if self._is_open is None:
            return True
        key = (call.queue, call.arrived)
        if call.hours_key != key:
            call.hours_key = key
            call.in_hours = self._is_open(call.queue, call.arrived)
        return call.in_hours

    @staticmethod
    def _hangup_by(call: Call) -> HangupBy:
        if call.shutdown:
            return HangupBy.SYSTEM
        if call.hangup_by is not None:
            return call.hangup_by
        if call.system_hangup:
            return HangupBy.SYSTEM
        if call.complete_reason == "caller":
            return HangupBy.CUSTOMER
        if call.complete_reason == "agent":
            return HangupBy.AGENT
        return HangupBy.UNKNOWN
