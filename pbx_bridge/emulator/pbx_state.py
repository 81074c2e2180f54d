"""What the emulated PBX knows, rebuilt from the events it emits. Pure and synchronous.

The emulator never invents calls: whoever drives it (a test, a replay, the
generator) emits events, and this module folds them into the state that
Asterisk would report through its list actions. ``Newchannel`` adds a
channel, snapshot events update it, ``BridgeEnter``/``BridgeLeave`` set its
bridge, ``Hangup`` removes it. Queue members come from ``QueueMember*``
events and waiting callers from ``QueueCallerJoin``/``QueueCallerLeave``.

The ``*_response`` functions turn that state into the exact frames Asterisk
22 writes for ``CoreShowChannels``, ``QueueStatus`` and ``QueueSummary``:
a list-ack response, one event per item, a ``...Complete`` event, every
frame carrying the caller's ActionID (``main/manager.c``, ``apps/app_queue.c``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pbx_bridge.emulator.events import MEMBER_FIELDS, SNAPSHOT_FIELDS

Headers = list[tuple[str, str]]

# Events whose unprefixed snapshot describes the channel as it is now.
_SNAPSHOT_UPDATES = frozenset(
    {"Newstate", "NewCallerid", "NewConnectedLine", "Newexten", "BridgeEnter", "BridgeLeave", "VarSet"}
)

def format_duration(seconds: float) -> str:
    """``HH:MM:SS`` as CoreShowChannel's ``Duration`` (1 s resolution)."""
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(slots=True)
class LiveChannel:
    """One channel as ``CoreShowChannels`` would list it."""

    snapshot: dict[str, str]
    created: float
    bridge_id: str = ""
    application: str = ""
    application_data: str = ""


@dataclass(slots=True)
class QueueEntry:
    """A caller waiting in a queue."""

    uniqueid: str
    channel: str
    caller_num: str
    caller_name: str
    connected_num: str
    connected_name: str
    joined: float


@dataclass(slots=True)
class QueueStats:
    """One queue: members by interface, waiting callers in order, counters."""

    members: dict[str, dict[str, str]] = field(default_factory=dict)
    entries: list[QueueEntry] = field(default_factory=list)
    completed: int = 0
    abandoned: int = 0
    hold_total: int = 0
    talk_total: int = 0


def _event_time(headers: Mapping[str, str], default: float) -> float:
    try:
        return float(headers["Timestamp"])
    except (KeyError, ValueError):
        return default


@dataclass(slots=True)
class PbxState:
    """Live channels and queues, updated by :meth:`apply` for every emitted event."""

    channels: dict[str, LiveChannel] = field(default_factory=dict)
    queues: dict[str, QueueStats] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget everything, as a restarted Asterisk would."""
        self.channels.clear()
        self.queues.clear()

    def apply(self, headers: Mapping[str, str], now: float) -> None:
        """Fold one event into the state; unknown events are ignored."""
        name = headers.get("Event")
        if name is None:
            return
        uid = headers.get("Uniqueid")
        if name == "Newchannel" and uid:
            self.channels[uid] = LiveChannel(
                snapshot={k: headers.get(k, "") for k in SNAPSHOT_FIELDS},
                created=_event_time(headers, now),
            )
            return
        if name == "Hangup" and uid:
            self.channels.pop(uid, None)
            return
        if name.startswith(("Queue", "Agent")):
            self._apply_queue(name, headers, now)
        if uid is None:
            return
        chan = self.channels.get(uid)
        if chan is None:
            return
        if name in _SNAPSHOT_UPDATES or name.startswith(("Queue", "Agent", "Dial")):
            for k in SNAPSHOT_FIELDS:
                v = headers.get(k)
                if v is not None:
                    chan.snapshot[k] = v
        if name == "Rename":
            # A masquerade renames the channel; the uniqueid stays the key.
            chan.snapshot["Channel"] = headers.get("Newname", chan.snapshot["Channel"])
        elif name == "Newexten":
            chan.application = headers.get("Application", "")
            chan.application_data = headers.get("AppData", "")
        elif name == "BridgeEnter":
            chan.bridge_id = headers.get("BridgeUniqueid", "")
        elif name == "BridgeLeave":
            chan.bridge_id = ""

    def _queue(self, headers: Mapping[str, str]) -> QueueStats | None:
        queue = headers.get("Queue")
        if not queue:
            return None
        stats = self.queues.get(queue)
        if stats is None:
            stats = self.queues[queue] = QueueStats()
        return stats

    def _apply_queue(self, name: str, headers: Mapping[str, str], now: float) -> None:
        stats = self._queue(headers)
        if stats is None:
            return
        if name in ("QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "QueueMemberPenalty"):
            iface = headers.get("Interface", "")
            member = stats.members.setdefault(iface, {})
            member.update({k: headers[k] for k in MEMBER_FIELDS if k in headers})
        elif name == "QueueMemberRemoved":
            stats.members.pop(headers.get("Interface", ""), None)
        elif name == "QueueCallerJoin":
            stats.entries.append(
                QueueEntry(
                    uniqueid=headers.get("Uniqueid", ""),
                    channel=headers.get("Channel", ""),
                    caller_num=headers.get("CallerIDNum", ""),
                    caller_name=headers.get("CallerIDName", ""),
                    connected_num=headers.get("ConnectedLineNum", ""),
                    connected_name=headers.get("ConnectedLineName", ""),
                    joined=_event_time(headers, now),
                )
            )
        elif name == "QueueCallerLeave":
            uid = headers.get("Uniqueid", "")
            stats.entries = [e for e in stats.entries if e.uniqueid != uid]
        elif name == "QueueCallerAbandon":
            stats.abandoned += 1
        elif name == "AgentComplete":
            stats.completed += 1
            stats.hold_total += _int(headers.get("HoldTime"))
            stats.talk_total += _int(headers.get("TalkTime"))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _action_id(action_id: str | None) -> Headers:
    return [("ActionID", action_id)] if action_id is not None else []


def list_ack(action_id: str | None, message: str) -> Headers:
    """The ``Response: Success`` that opens an event list (``astman_send_listack``)."""
    return [("Response", "Success"), *_action_id(action_id), ("EventList", "start"), ("Message", message)]


def list_complete(event: str, action_id: str | None, items: int) -> Headers:
    """The ``...Complete`` event that closes an event list."""
    return [("Event", event), *_action_id(action_id), ("EventList", "Complete"), ("ListItems", str(items))]


def core_show_channels_response(state: PbxState, action_id: str | None, now: float) -> list[Headers]:
    """Frames answering ``CoreShowChannels``: ack, one ``CoreShowChannel`` per live channel, complete."""
    out = [list_ack(action_id, "Channels will follow")]
    for chan in state.channels.values():
        out.append(
            [
                ("Event", "CoreShowChannel"),
                *_action_id(action_id),
                *((k, chan.snapshot.get(k, "")) for k in SNAPSHOT_FIELDS),
                ("BridgeId", chan.bridge_id),
                ("Application", chan.application),
                ("ApplicationData", chan.application_data),
                ("Duration", format_duration(now - chan.created)),
            ]
        )
    out.append(list_complete("CoreShowChannelsComplete", action_id, len(state.channels)))
    return out


def _available(member: Mapping[str, str]) -> bool:
    # app_queue counts a member available when unpaused and its device is idle (NOT_INUSE or UNKNOWN).
    return member.get("Paused", "0") == "0" and member.get("Status", "1") in ("0", "1")


def queue_status_response(
    state: PbxState, action_id: str | None, now: float, queue: str | None = None
) -> list[Headers]:
    """Frames answering ``QueueStatus``: QueueParams, QueueMember and QueueEntry per queue."""
    out = [list_ack(action_id, "Queue status will follow")]
    items = 0
    aid = _action_id(action_id)
    for name, stats in state.queues.items():
        if queue and name != queue:
            continue
        done = stats.completed
        out.append(
            [
                ("Event", "QueueParams"),
                ("Queue", name),
                ("Max", "0"),
                ("Strategy", "rrmemory"),
                ("Calls", str(len(stats.entries))),
                ("Holdtime", str(stats.hold_total // done if done else 0)),
                ("TalkTime", str(stats.talk_total // done if done else 0)),
                ("Completed", str(done)),
                ("Abandoned", str(stats.abandoned)),
                ("ServiceLevel", "0"),
                ("ServicelevelPerf", "0.0"),
                ("ServicelevelPerf2", "0.0"),
                ("Weight", "0"),
                *aid,
            ]
        )
        items += 1
        for iface, m in stats.members.items():
            out.append(
                [
                    ("Event", "QueueMember"),
                    ("Queue", name),
                    ("Name", m.get("MemberName", iface)),
                    ("Location", iface),
                    ("StateInterface", m.get("StateInterface", iface)),
                    ("Membership", m.get("Membership", "dynamic")),
                    ("Penalty", m.get("Penalty", "0")),
                    ("CallsTaken", m.get("CallsTaken", "0")),
                    ("LastCall", m.get("LastCall", "0")),
                    ("LastPause", m.get("LastPause", "0")),
                    ("LoginTime", m.get("LoginTime", "0")),
                    ("InCall", m.get("InCall", "0")),
                    ("Status", m.get("Status", "0")),
                    ("Paused", m.get("Paused", "0")),
                    ("PausedReason", m.get("PausedReason", "")),
                    ("Wrapuptime", m.get("Wrapuptime", "0")),
                    *aid,
                ]
            )
            items += 1
        for pos, e in enumerate(stats.entries, 1):
            out.append(
                [
                    ("Event", "QueueEntry"),
                    ("Queue", name),
                    ("Position", str(pos)),
                    ("Channel", e.channel),
                    ("Uniqueid", e.uniqueid),
                    ("CallerIDNum", e.caller_num),
                    ("CallerIDName", e.caller_name),
                    ("ConnectedLineNum", e.connected_num),
                    ("ConnectedLineName", e.connected_name),
                    ("Wait", str(max(0, int(now - e.joined)))),
                    ("Priority", "0"),
                    *aid,
                ]
            )
            items += 1
    out.append(list_complete("QueueStatusComplete", action_id, items))
    return out


def queue_summary_response(
    state: PbxState, action_id: str | None, now: float, queue: str | None = None
) -> list[Headers]:
    """Frames answering ``QueueSummary``: one ``QueueSummary`` event per queue."""
    out = [list_ack(action_id, "Queue summary will follow")]
    items = 0
    for name, stats in state.queues.items():
        if queue and name != queue:
            continue
        done = stats.completed
        longest = max((now - e.joined for e in stats.entries), default=0.0)
        out.append(
            [
                ("Event", "QueueSummary"),
                ("Queue", name),
                ("LoggedIn", str(len(stats.members))),
                ("Available", str(sum(_available(m) for m in stats.members.values()))),
                ("Callers", str(len(stats.entries))),
                ("HoldTime", str(stats.hold_total // done if done else 0)),
                ("TalkTime", str(stats.talk_total // done if done else 0)),
                ("LongestHoldTime", str(max(0, int(longest)))),
                *_action_id(action_id),
            ]
        )
        items += 1
    out.append(list_complete("QueueSummaryComplete", action_id, items))
    return out
