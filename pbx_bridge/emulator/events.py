"""Builders for AMI events with the header sets and order Asterisk 22 sends. Pure.

Every builder returns a plain ``dict`` whose insertion order is the wire
order: ``Event``, ``Privilege``, ``Timestamp``, then the snapshots and
fields exactly as they appear in the real captures under
``tests/fixtures/traces`` (checked by ``tests/emulator``). A channel
snapshot is the 14 fields of ``ast_manager_build_channel_state_string``;
prefixed snapshots (``Dest``, ``Transferer``, ``LocalOne``...) repeat them with
the prefix. A bridge snapshot is the 7 ``Bridge*`` fields.

Snapshots are tuples taken at the moment an event is built, because Asterisk
caches them: ``DialBegin`` shows the callee as it was when created
(``Down``, ``agents,s,1``), while ``AgentCalled`` a moment earlier already
shows it with the caller as connected line. Keeping a snapshot and reusing
it reproduces that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

Snap = tuple[str, str, str, str, str, str, str, str, str, str, str, str, str, str]
BridgeSnap = tuple[str, str, str, str, str, str, str]
Pairs = Iterable[tuple[str, str]]

UNKNOWN = "<unknown>"
CALLING_PRES = "0 (Presentation Allowed, Not Screened)"

STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}
DOWN, RING, RINGING, UP = 0, 4, 5, 6

CAUSE_TEXT = {0: "Unknown", 16: "Normal Clearing", 26: "Answered elsewhere", 4: "Unknown", 32: "Unknown"}

SNAPSHOT_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
BRIDGE_FIELDS = (
    "BridgeUniqueid",
    "BridgeType",
    "BridgeTechnology",
    "BridgeCreator",
    "BridgeName",
    "BridgeNumChannels",
    "BridgeVideoSourceMode",
)
MEMBER_FIELDS = (
    "Queue",
    "MemberName",
    "Interface",
    "StateInterface",
    "Membership",
    "Penalty",
    "CallsTaken",
    "LastCall",
    "LastPause",
    "LoginTime",
    "InCall",
    "Status",
    "Paused",
    "PausedReason",
    "Ringinuse",
    "Wrapuptime",
)

PRIVILEGE = {
    "AgentCalled": "agent,all",
    "AgentComplete": "agent,all",
    "AgentConnect": "agent,all",
    "AgentRingNoAnswer": "agent,all",
    "QueueCallerAbandon": "agent,all",
    "QueueCallerJoin": "agent,all",
    "QueueCallerLeave": "agent,all",
    "QueueMemberAdded": "agent,all",
    "QueueMemberPause": "agent,all",
    "QueueMemberRemoved": "agent,all",
    "QueueMemberStatus": "agent,all",
    "Newexten": "dialplan,all",
    "VarSet": "dialplan,all",
    "DTMFBegin": "dtmf,all",
    "DTMFEnd": "dtmf,all",
    "FullyBooted": "system,all",
    "Shutdown": "system,all",
    "RTCPSent": "reporting,all",
    "RTCPReceived": "reporting,all",
}

_SNAP_KEYS: dict[str, tuple[str, ...]] = {}
_BRIDGE_KEYS: dict[str, tuple[str, ...]] = {}


def snap_keys(prefix: str) -> tuple[str, ...]:
    """The 14 snapshot header names with ``prefix`` (cached)."""
    keys = _SNAP_KEYS.get(prefix)
    if keys is None:
        keys = _SNAP_KEYS[prefix] = tuple(prefix + k for k in SNAPSHOT_FIELDS)
    return keys


def bridge_keys(prefix: str) -> tuple[str, ...]:
    """The 7 bridge snapshot header names with ``prefix`` (cached)."""
    keys = _BRIDGE_KEYS.get(prefix)
    if keys is None:
        keys = _BRIDGE_KEYS[prefix] = tuple(prefix + k for k in BRIDGE_FIELDS)
    return keys


def stamp(ts: float) -> str:
    """``Timestamp`` as ``timestampevents = yes`` writes it: epoch with microseconds."""
    return f"{ts:.6f}"


class Chan:
    """A channel's mutable state; :meth:`snap` freezes it for one event."""

    __slots__ = (
        "cid_name",
        "cid_num",
        "cl_name",
        "cl_num",
        "context",
        "exten",
        "linkedid",
        "name",
        "priority",
        "state",
        "uniqueid",
    )

    def __init__(
        self,
        name: str,
        uniqueid: str,
        linkedid: str,
        *,
        state: int,
        cid_num: str,
        cid_name: str,
        context: str,
        exten: str,
        priority: int = 1,
        cl_num: str = UNKNOWN,
        cl_name: str = UNKNOWN,
    ) -> None:
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        self.state = state
        self.cid_num = cid_num
        self.cid_name = cid_name
        self.cl_num = cl_num
        self.cl_name = cl_name
        self.context = context
        self.exten = exten
        self.priority = priority

    def snap(self) -> Snap:
        """The channel as an event shows it now."""
        return (
            self.name,
            str(self.state),
            STATE_DESC[self.state],
            self.cid_num,
            self.cid_name,
            self.cl_num,
            self.cl_name,
            "en",
            "",
            self.context,
            self.exten,
            str(self.priority),
            self.uniqueid,
            self.linkedid,
        )

    def connect(self, other: Chan) -> None:
        """Set the connected line to ``other``'s caller id."""
        self.cl_num = other.cid_num
        self.cl_name = other.cid_name


@dataclass(slots=True)
class Bridge:
    """A basic bridge and how many channels it holds."""

    uniqueid: str
    channels: int = 0

    def snap(self) -> BridgeSnap:
        """The bridge as an event shows it now."""
        return (self.uniqueid, "basic", "simple_bridge", UNKNOWN, UNKNOWN, str(self.channels), "none")


def event(name: str, ts: float, *parts: Pairs) -> dict[str, str]:
    """``Event``/``Privilege``/``Timestamp`` followed by ``parts`` in order."""
    d = {"Event": name, "Privilege": PRIVILEGE.get(name, "call,all"), "Timestamp": stamp(ts)}
    for p in parts:
        d.update(p)
    return d


def snap(s: Snap, prefix: str = "") -> Pairs:
    """A channel snapshot as header pairs."""
    return zip(snap_keys(prefix), s, strict=True)


def bsnap(b: BridgeSnap, prefix: str = "") -> Pairs:
    """A bridge snapshot as header pairs."""
    return zip(bridge_keys(prefix), b, strict=True)


# --------------------------------------------------------------------- channel events


def chan_event(ts: float, name: str, s: Snap, *extra: tuple[str, str]) -> dict[str, str]:
    """An event made of one channel snapshot plus ``extra`` fields."""
    return event(name, ts, snap(s), extra)


def hangup(ts: float, s: Snap, cause: int = 16) -> dict[str, str]:
    """``Hangup`` with its Q.850 cause."""
    return chan_event(ts, "Hangup", s, ("Cause", str(cause)), ("Cause-txt", CAUSE_TEXT.get(cause, "Unknown")))


def hangup_request(ts: float, s: Snap, cause: int | None = None) -> dict[str, str]:
    """``HangupRequest``: that party hung up (``Cause`` only on some paths, as in the captures)."""
    if cause is None:
        return chan_event(ts, "HangupRequest", s)
    return chan_event(ts, "HangupRequest", s, ("Cause", str(cause)))


def soft_hangup_request(ts: float, s: Snap, cause: int = 16) -> dict[str, str]:
    """``SoftHangupRequest``: Asterisk itself hung the channel up."""
    return chan_event(ts, "SoftHangupRequest", s, ("Cause", str(cause)))


def hold(ts: float, s: Snap, music_class: str | None = "default") -> dict[str, str]:
    """``Hold`` on the channel that pressed hold (no ``MusicClass`` for the ``*2`` consult)."""
    if music_class is None:
        return chan_event(ts, "Hold", s)
    return chan_event(ts, "Hold", s, ("MusicClass", music_class))


def moh_start(ts: float, s: Snap, music_class: str = "default") -> dict[str, str]:
    """``MusicOnHoldStart`` on the held party (or a caller waiting in a queue)."""
    return chan_event(ts, "MusicOnHoldStart", s, ("Class", music_class))


def new_callerid(ts: float, s: Snap) -> dict[str, str]:
    """``NewCallerid`` with the presentation field Asterisk adds."""
    return chan_event(ts, "NewCallerid", s, ("CID-CallingPres", CALLING_PRES))


def var_set(ts: float, s: Snap, variable: str, value: str) -> dict[str, str]:
    """``VarSet`` (dialplan class)."""
    return chan_event(ts, "VarSet", s, ("Variable", variable), ("Value", value))


def new_exten(ts: float, s: Snap, extension: str, application: str, data: str) -> dict[str, str]:
    """``Newexten`` (dialplan class)."""
    return chan_event(ts, "Newexten", s, ("Extension", extension), ("Application", application), ("AppData", data))


def dtmf_begin(ts: float, s: Snap, digit: str) -> dict[str, str]:
    """``DTMFBegin`` received from the phone."""
    return chan_event(ts, "DTMFBegin", s, ("Digit", digit), ("Direction", "Received"))


def dtmf_end(ts: float, s: Snap, digit: str, duration_ms: int = 180) -> dict[str, str]:
    """``DTMFEnd`` received from the phone."""
    return chan_event(ts, "DTMFEnd", s, ("Digit", digit), ("DurationMs", str(duration_ms)), ("Direction", "Received"))


def queue_caller(ts: float, name: str, s: Snap, *, queue: str, position: int, count: int) -> dict[str, str]:
    """``QueueCallerJoin`` / ``QueueCallerLeave``."""
    return chan_event(ts, name, s, ("Queue", queue), ("Position", str(position)), ("Count", str(count)))


def queue_caller_abandon(
    ts: float, s: Snap, *, queue: str, position: int, original: int, hold_time: int
) -> dict[str, str]:
    """``QueueCallerAbandon``: HoldTime is whole seconds waited in the queue."""
    return chan_event(
        ts,
        "QueueCallerAbandon",
        s,
        ("Queue", queue),
        ("Position", str(position)),
        ("OriginalPosition", str(original)),
        ("HoldTime", str(hold_time)),
    )


# --------------------------------------------------------------------- dial and queue-agent events


def dial(ts: float, name: str, src: Snap | None, dest: Snap, *extra: tuple[str, str]) -> dict[str, str]:
    """``DialBegin``/``DialState``/``DialEnd``; ``src`` None for the Local ``;1`` half (no caller)."""
    if src is None:
        return event(name, ts, snap(dest, "Dest"), extra)
    return event(name, ts, snap(src), snap(dest, "Dest"), extra)


class Member(NamedTuple):
    """Which queue member an ``Agent*`` event is about."""

    queue: str
    interface: str
    name: str


def agent_event(
    ts: float, name: str, caller: Snap, dest: Snap | None, who: Member, *extra: tuple[str, str]
) -> dict[str, str]:
    """``AgentCalled``/``AgentConnect``/``AgentRingNoAnswer``/``AgentComplete``.

    ``dest`` is None for the ``AgentComplete`` Asterisk sends after the agent's
    channel is already gone (seen after a blind transfer).
    """
    fields = (("Queue", who.queue), ("Interface", who.interface), ("MemberName", who.name), *extra)
    if dest is None:
        return event(name, ts, snap(caller), fields)
    return event(name, ts, snap(caller), snap(dest, "Dest"), fields)


# --------------------------------------------------------------------- bridges and transfers


def bridge_event(ts: float, name: str, b: BridgeSnap) -> dict[str, str]:
    """``BridgeCreate`` / ``BridgeDestroy``."""
    return event(name, ts, bsnap(b))


def bridge_enter(ts: float, b: BridgeSnap, s: Snap, swap_uniqueid: str | None = None) -> dict[str, str]:
    """``BridgeEnter``; ``SwapUniqueid`` names the Local half it replaces after optimisation."""
    if swap_uniqueid is None:
        return event("BridgeEnter", ts, bsnap(b), snap(s))
    return event("BridgeEnter", ts, bsnap(b), snap(s), (("SwapUniqueid", swap_uniqueid),))


def bridge_leave(ts: float, b: BridgeSnap, s: Snap) -> dict[str, str]:
    """``BridgeLeave``."""
    return event("BridgeLeave", ts, bsnap(b), snap(s))


def bridge_merge(ts: float, to: BridgeSnap, frm: BridgeSnap) -> dict[str, str]:
    """``BridgeMerge`` (attended transfer joining the consultation bridge into the call's)."""
    return event("BridgeMerge", ts, bsnap(to, "To"), bsnap(frm, "From"))


def blind_transfer(
    ts: float, transferer: Snap, transferee: Snap, b: BridgeSnap, *, context: str, extension: str
) -> dict[str, str]:
    """``BlindTransfer`` as a SIP REFER produces it (``IsExternal: Yes``)."""
    return event(
        "BlindTransfer",
        ts,
        (("Result", "Success"),),
        snap(transferer, "Transferer"),
        snap(transferee, "Transferee"),
        bsnap(b),
        (("IsExternal", "Yes"), ("Context", context), ("Extension", extension)),
    )


def attended_transfer(
    ts: float,
    *,
    orig_transferer: Snap,
    orig_bridge: BridgeSnap,
    second_transferer: Snap,
    second_bridge: BridgeSnap,
    transferee: Snap,
    target: Snap | None,
    dest_bridge: str,
) -> dict[str, str]:
    """``AttendedTransfer`` with ``DestType: Bridge``; ``target`` None as after a ``*2`` consult."""
    parts: list[Pairs] = [
        (("Result", "Success"),),
        snap(orig_transferer, "OrigTransferer"),
        bsnap(orig_bridge, "Orig"),
        snap(second_transferer, "SecondTransferer"),
        bsnap(second_bridge, "Second"),
        snap(transferee, "Transferee"),
    ]
    if target is not None:
        parts.append(snap(target, "TransferTarget"))
    parts.append((("IsExternal", "No"), ("DestType", "Bridge"), ("DestBridgeUniqueid", dest_bridge)))
    return event("AttendedTransfer", ts, *parts)


def local_bridge(ts: float, one: Snap, two: Snap, context: str, exten: str) -> dict[str, str]:
    """``LocalBridge`` linking the ``;1`` and ``;2`` halves of a Local channel."""
    return event(
        "LocalBridge",
        ts,
        snap(one, "LocalOne"),
        snap(two, "LocalTwo"),
        (("Context", context), ("Exten", exten), ("LocalOptimization", "Yes")),
    )


def local_optimization_begin(
    ts: float, one: Snap, two: Snap, source: Snap, *, dest_uniqueid: str, ident: int
) -> dict[str, str]:
    """``LocalOptimizationBegin``: ``source`` is the real channel about to replace a Local half."""
    return event(
        "LocalOptimizationBegin",
        ts,
        snap(one, "LocalOne"),
        snap(two, "LocalTwo"),
        snap(source, "Source"),
        (("DestUniqueId", dest_uniqueid), ("Id", str(ident))),
    )


def local_optimization_end(ts: float, one: Snap, two: Snap, ident: int, success: bool = False) -> dict[str, str]:
    """``LocalOptimizationEnd``; Asterisk 22.10 says ``Success: No`` even when it worked."""
    return event(
        "LocalOptimizationEnd",
        ts,
        snap(one, "LocalOne"),
        snap(two, "LocalTwo"),
        (("Success", "Yes" if success else "No"), ("Id", str(ident))),
    )


# --------------------------------------------------------------------- devices and queue members


def device_state(ts: float, device: str, state: str) -> dict[str, str]:
    """``DeviceStateChange``."""
    return event("DeviceStateChange", ts, (("Device", device), ("State", state)))


def queue_member(ts: float, name: str, values: tuple[str, ...]) -> dict[str, str]:
    """``QueueMemberAdded``/``Removed``/``Pause``/``Status``: the 16 member fields in order."""
    return event(name, ts, zip(MEMBER_FIELDS, values, strict=True))


def shutdown(ts: float, restart: bool = True) -> dict[str, str]:
    """``Shutdown`` as ``core restart now`` sends it."""
    return event("Shutdown", ts, (("Shutdown", "Cleanly"), ("Restart", "True" if restart else "False")))
