"""Property tests of the engine's invariants on perturbed real captures and on synthetic events.

Whatever the stream — events lost, re-delivered, locally reordered, interleaved with events of
random shape — the engine must not crash, must end every call it told anyone about exactly once,
and must produce records whose durations are not negative, whose answer does not come before the
arrival, and whose ``hangup_by`` is one of the four documented values.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pbx_bridge.ami.events import AmiEvent, EventDecoder, StreamStart
from pbx_bridge.ami.frames import Frame
from pbx_bridge.engine.model import CallRecord
from pbx_bridge.engine.tracker import CallTracker

from . import truth
from .captures import Item, Replay, decode_frames, events, replay

# The busy-hour capture is left out only to keep each example fast; its events are of the same kinds.
CAPTURES = [name for name in truth.capture_names() if name != "q_busy_hour"]
HANGUP_VALUES = {"customer", "agent", "system", "unknown"}
DURATIONS = ("talk_s", "time_to_answer_s", "abandoned_after_s")

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written outside the test folders
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------
# The invariants


def check_record(rec: CallRecord) -> None:
    """Invariants of one finished call record, in its typed and its JSON form."""
    for name in DURATIONS:
        value = getattr(rec, name)
        assert value is None or value >= 0, f"{rec.call_id}: {name} = {value}"
    for hold in rec.holds:
        assert hold.end >= hold.start, f"{rec.call_id}: hold ends before it starts: {hold}"
        assert hold.seconds >= 0
    if rec.answered_at is not None:
        assert rec.answered_at >= rec.arrived_at, f"{rec.call_id}: answered {rec.answered_at} < arrived"
    if rec.offered_at is not None and rec.answered_at is not None:
        assert rec.answered_at >= rec.offered_at, f"{rec.call_id}: answered {rec.answered_at} < offered"
    data = rec.to_dict()
    assert data["hangup_by"] in HANGUP_VALUES
    for name in (*DURATIONS, "hold_total_s", "hold_max_s"):
        assert data[name] is None or data[name] >= 0
    assert all(h["seconds"] >= 0 for h in data["holds"])
    json.dumps(data, ensure_ascii=False)  # the public contract is JSON


def check_invariants(result: Replay) -> None:
    """Invariants of a whole replay (feed, then close_all)."""
    ended = [r.call_id for r in result.records]
    assert len(ended) == len(set(ended)), f"calls ended twice: {sorted({c for c in ended if ended.count(c) > 1})}"
    # Live outputs about a call carry its id (floor outputs such as agent states carry none).
    named = {o.call_id for o in result.outputs if isinstance(getattr(o, "call_id", None), str)}
    never_ended = named - set(ended)
    assert not never_ended, f"calls named by live outputs that never ended: {sorted(never_ended)}"
    assert result.tracker.open_calls == []
    assert result.tracker.stats.calls_ended == len(ended)
    for rec in result.records:
        check_record(rec)


@pytest.mark.parametrize("name", truth.capture_names())
def test_every_call_named_by_an_output_ends_exactly_once(name: str) -> None:
    """Replayed as captured, every call id the live outputs name ends exactly once, in a sound record."""
    check_invariants(replay(events(name)))


# ---------------------------------------------------------------------------------------------
# Real captures, perturbed


@dataclass(frozen=True)
class Drop:
    """An event lost (a gap in the stream)."""

    at: int


@dataclass(frozen=True)
class Shuffle:
    """A window of events delivered in another order."""

    at: int
    width: int
    seed: int


@dataclass(frozen=True)
class Repeat:
    """An event delivered a second time, up to a few events later."""

    at: int
    later: int


Op = Drop | Shuffle | Repeat

positions = st.integers(min_value=0, max_value=1 << 20)
ops = st.one_of(
    st.builds(Drop, at=positions),
    st.builds(Shuffle, at=positions, width=st.integers(2, 8), seed=st.integers(0, 1 << 16)),
    st.builds(Repeat, at=positions, later=st.integers(0, 8)),
)


def perturb(items: Sequence[Item], plan: Sequence[Op]) -> list[Item]:
    out = list(items)
    for op in plan:
        if not out:
            break
        i = op.at % len(out)
        if isinstance(op, Drop):
            del out[i]
        elif isinstance(op, Shuffle):
            window = out[i : i + op.width]
            random.Random(op.seed).shuffle(window)
            out[i : i + op.width] = window
        else:
            out.insert(min(i + 1 + op.later, len(out)), out[i])
    return out


@PROPERTY
@given(name=st.sampled_from(CAPTURES), plan=st.lists(ops, max_size=25))
@example(name="blonde_transfer_noanswer", plan=[])
def test_perturbed_captures_keep_the_invariants(name: str, plan: list[Op]) -> None:
    """Dropped, repeated and locally reordered events never break the engine's invariants."""
    check_invariants(replay(perturb(events(name), plan)))


@PROPERTY
@given(name=st.sampled_from(CAPTURES), keep=st.integers(0, 100), seed=st.integers(0, 1 << 16))
@example(name="blonde_transfer_noanswer", keep=100, seed=0)
def test_gaps_keep_the_invariants(name: str, keep: int, seed: int) -> None:
    """A stream that lost any share of its events (a flaky link) never breaks the invariants."""
    rng = random.Random(seed)
    check_invariants(replay([item for item in events(name) if rng.randrange(100) < keep]))


@PROPERTY
@given(name=st.sampled_from(CAPTURES), cut=st.integers(0, 1 << 20), live_share=st.integers(0, 100))
@example(name="blonde_transfer_noanswer", cut=0, live_share=0)
def test_reconnect_resync_keeps_the_invariants(name: str, cut: int, live_share: int) -> None:
    """A reconnect mid-stream (banner, resync with some channels still up, live ticks) ends each call once."""
    items = events(name)
    at = cut % (len(items) + 1)
    tracker = CallTracker(is_open=None)
    result = Replay(tracker)
    for item in items[:at]:
        result.outputs.extend(tracker.feed(item))
    now = max((i.ts for i in items[:at] if isinstance(i, AmiEvent) and i.stamped), default=0.0)
    result.outputs.extend(tracker.feed(StreamStart(now, "11.0.0")))
    channels = sorted({uid for call in tracker.open_calls for uid in call.chans})
    alive = channels[: len(channels) * live_share // 100]
    result.outputs.extend(tracker.resync(alive, now))
    result.outputs.extend(tracker.tick(now + 120.0))
    for item in items[at:]:
        result.outputs.extend(tracker.feed(item))
    result.outputs.extend(tracker.close_all())
    check_invariants(result)


# ---------------------------------------------------------------------------------------------
# Synthetic events with random headers, alone or interleaved with a real capture

EVENT_NAMES = (
    "Newchannel", "Newstate", "NewCallerid", "VarSet", "Rename", "LocalBridge", "DialBegin", "DialEnd",
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentConnect",
    "AgentComplete", "AgentRingNoAnswer", "Pickup", "BridgeEnter", "BridgeLeave", "BridgeDestroy", "Hold",
    "Unhold", "BlindTransfer", "AttendedTransfer", "HangupRequest", "SoftHangupRequest", "Hangup", "Shutdown",
    "QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "Newexten", "UserEvent",
)  # fmt: skip
SNAPSHOT_PREFIXES = (
    "", "Dest", "Transferer", "Transferee", "OrigTransferer", "SecondTransferer", "TransferTarget",
    "LocalOne", "LocalTwo", "Target",
)  # fmt: skip
SNAPSHOT_FIELDS = ("Uniqueid", "Linkedid", "Channel", "ChannelState", "CallerIDNum", "CallerIDName", "Exten")
OTHER_FIELDS = (
    "DialStatus", "Queue", "Interface", "StateInterface", "MemberName", "BridgeUniqueid", "SwapUniqueid",
    "Result", "OrigBridgeUniqueid", "SecondBridgeUniqueid", "Extension", "Cause", "Reason", "RingTime",
    "Variable", "Value", "Newname", "MusicClass", "DestType", "Status", "Paused",
)  # fmt: skip
CHOICES = {
    "ChannelState": ("0", "4", "5", "6", "x", ""),
    "DialStatus": ("ANSWER", "NOANSWER", "CANCEL", "BUSY", "CONGESTION", "CHANUNAVAIL", ""),
    "Result": ("Success", "Fail"),
    "Cause": ("0", "4", "16", "17"),
    "Reason": ("caller", "agent", "transfer"),
    "RingTime": ("0", "15000", "abc", "-5"),
    "Variable": ("MIXMONITOR_FILENAME", "QUEUESTATUS"),
    "Queue": ("support", "sales", ""),
    "Status": ("1", "2", "6"),
    "Paused": ("0", "1"),
}
SYNTHETIC_IDS = ("9.1", "9.2", "9.3", "", "<unknown>")
SYNTHETIC_CHANNELS = (
    "PJSIP/1001-000000a1", "PJSIP/customer-000000a2", "Local/1004@agents-000000a3;1",
    "Local/1004@agents-000000a3;2", "PJSIP/trunk-000000a4", "", "<unknown>",
)  # fmt: skip
FREE_TEXT = st.one_of(st.sampled_from(("", "<unknown>", "1001", "support", "张伟", "600")), st.text(max_size=8))


@dataclass(frozen=True)
class Pools:
    """Ids the synthetic events draw from, so that they collide with the capture's channels."""

    uniqueids: tuple[str, ...]
    channels: tuple[str, ...]
    bridges: tuple[str, ...]


@cache
def pools(name: str | None) -> Pools:
    uids: set[str] = set()
    channels: set[str] = set()
    bridges: set[str] = set()
    for item in events(name) if name else ():
        if not isinstance(item, AmiEvent):
            continue
        for snap in (item.chan, item.dest):
            if snap is not None:
                uids.add(snap.uniqueid)
                channels.add(snap.channel)
        if item.get("BridgeUniqueid"):
            bridges.add(str(item.get("BridgeUniqueid")))
    return Pools(
        uniqueids=(*sorted(uids), *SYNTHETIC_IDS),
        channels=(*sorted(channels), *SYNTHETIC_CHANNELS),
        bridges=(*sorted(bridges), "bridge-9", ""),
    )


def value_for(key: str, pool: Pools) -> st.SearchStrategy[str]:
    base = key
    for prefix in SNAPSHOT_PREFIXES:
        if prefix and key.startswith(prefix) and key[len(prefix) :] in SNAPSHOT_FIELDS:
            base = key[len(prefix) :]
    if base in ("Uniqueid", "Linkedid") or key == "SwapUniqueid":
        return st.sampled_from(pool.uniqueids)
    if key.endswith("BridgeUniqueid"):
        return st.sampled_from(pool.bridges)
    if base == "Channel" or key in ("Newname", "Interface", "StateInterface", "TargetChannel"):
        return st.sampled_from(pool.channels)
    if base in CHOICES:
        return st.sampled_from(CHOICES[base])
    return FREE_TEXT


ALL_KEYS = tuple(p + f for p in SNAPSHOT_PREFIXES for f in SNAPSHOT_FIELDS) + OTHER_FIELDS


@st.composite
def synthetic_headers(draw: st.DrawFn, pool: Pools) -> dict[str, str]:
    # Most real events describe a channel: give most synthetic ones a main snapshot, so that they
    # land in calls; any other header may come along.
    keys = [key for key in ("Uniqueid", "Linkedid", "Channel") if draw(st.integers(0, 9)) < 7]
    keys += draw(st.lists(st.sampled_from(ALL_KEYS), max_size=12, unique=True))
    headers = {"Event": draw(st.sampled_from(EVENT_NAMES))}
    for key in keys:
        headers[key] = draw(value_for(key, pool))
    return headers


@dataclass(frozen=True)
class Insert:
    """A synthetic event placed before the real event at ``at``, stamped ``delay_ms`` after the last stamp."""

    at: int
    delay_ms: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Case:
    name: str | None
    inserts: tuple[Insert, ...]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    name = draw(st.one_of(st.none(), st.sampled_from(CAPTURES)))
    pool = pools(name)
    inserts = draw(
        st.lists(
            st.builds(Insert, at=positions, delay_ms=st.integers(0, 90_000), headers=synthetic_headers(pool)),
            min_size=1,
            max_size=40,
        )
    )
    return Case(name, tuple(inserts))


def interleave(real: Sequence[Item], inserts: Sequence[Insert], start: float = 1.7e9) -> list[Item]:
    """Real events with the synthetic ones in place, all stamped (``timestampevents = yes``, as the
    captures); a synthetic stamp never runs ahead of the next real one, so time stays monotonic.
    """
    placed = sorted(((ins.at % (len(real) + 1), n, ins) for n, ins in enumerate(inserts)), key=lambda x: x[:2])
    next_stamp = [math.inf] * (len(real) + 1)
    for i in range(len(real) - 1, -1, -1):
        item = real[i]
        stamped = isinstance(item, AmiEvent) and item.stamped
        next_stamp[i] = item.ts if stamped else next_stamp[i + 1]
    out: list[Item] = []
    decoder = EventDecoder()
    k = 0
    for i in range(len(real) + 1):
        while k < len(placed) and placed[k][0] == i:
            ins = placed[k][2]
            k += 1
            clock = max(decoder.last_ts, start) + ins.delay_ms / 1000
            headers = {**ins.headers, "Timestamp": repr(min(clock, next_stamp[i]))}
            item = decoder.decode(Frame(headers))
            if item is not None:
                out.append(item)
        if i < len(real):
            item = real[i]
            if isinstance(item, AmiEvent) and item.stamped:
                decoder.last_ts = max(decoder.last_ts, item.ts)
            out.append(item)
    return out


# Found by this test: a call answered before any offer (no queue, no dial seen), then offered.
ANSWER_THEN_OFFER = Case(
    None,
    (
        Insert(0, 0, {"Event": "AgentConnect", "Uniqueid": "9.1"}),
        Insert(0, 5000, {"Event": "QueueCallerJoin", "Uniqueid": "9.2", "Linkedid": "9.1", "Queue": "support"}),
    ),
)
CUSTOMER_CHANNEL = "PJSIP/customer-000000a2"
# Found by this test: an agent leg reported answered on its own, then linked into the customer's call
# (what a blonde transfer's recall does) -- the first call's id never ends.
ANSWERED_LEG_MERGED = Case(
    None,
    (
        Insert(0, 0, {"Event": "AgentConnect", "Uniqueid": "9.1", "Channel": "PJSIP/1002-0000001f"}),
        Insert(0, 1000, {"Event": "Newchannel", "Uniqueid": "9.3", "Channel": CUSTOMER_CHANNEL}),
        Insert(0, 1000, {"Event": "BridgeEnter", "Uniqueid": "9.3", "Linkedid": "9.1", "Channel": CUSTOMER_CHANNEL}),
    ),
)


@settings(PROPERTY, max_examples=200)
@given(case=cases())
@example(case=ANSWER_THEN_OFFER)
@example(case=ANSWERED_LEG_MERGED)
def test_synthetic_events_keep_the_invariants(case: Case) -> None:
    """Random events with random headers, alone or amid a real capture, never break the invariants."""
    real = events(case.name) if case.name else ()
    check_invariants(replay(interleave(real, case.inserts)))


def test_interleave_keeps_time_monotonic() -> None:
    """The synthetic stream generator itself keeps event time monotonic (so every failure is the engine's)."""
    inserts = [Insert(at, 90_000, {"Event": "UserEvent"}) for at in range(0, 400, 7)]
    items = interleave(events("a"), inserts)
    stamps = [i.ts for i in items if isinstance(i, AmiEvent) and i.stamped]
    assert stamps == sorted(stamps)
    assert len(items) == len(events("a")) + len(inserts)


# ---------------------------------------------------------------------------------------------
# The bug the synthetic property test found, as a plain scenario


def test_call_answered_before_it_is_offered_has_no_negative_wait() -> None:
    """A caller bridged to an agent with no queue or dial, then queued, gets no negative time to answer."""
    customer = {"Channel": "PJSIP/trunk-00000001", "Uniqueid": "100.1", "Linkedid": "100.1", "CallerIDNum": "5550199"}
    agent = {"Channel": "PJSIP/1001-00000002", "Uniqueid": "100.2", "Linkedid": "100.1", "CallerIDNum": "1001"}
    items = decode_frames(
        [
            {"Event": "Newchannel", "Timestamp": "100.0", "ChannelState": "4", "Exten": "600", **customer},
            {"Event": "Newchannel", "Timestamp": "100.5", "ChannelState": "6", "Exten": "s", **agent},
            {"Event": "BridgeEnter", "Timestamp": "101.0", "BridgeUniqueid": "b-1", **customer},
            {"Event": "BridgeEnter", "Timestamp": "101.0", "BridgeUniqueid": "b-1", **agent},
            {"Event": "BridgeLeave", "Timestamp": "110.0", "BridgeUniqueid": "b-1", **agent},
            {"Event": "Hangup", "Timestamp": "110.0", "Cause": "16", **agent},
            {"Event": "BridgeLeave", "Timestamp": "110.0", "BridgeUniqueid": "b-1", **customer},
            {"Event": "QueueCallerJoin", "Timestamp": "110.1", "Queue": "support", "Position": "1", **customer},
            {"Event": "HangupRequest", "Timestamp": "115.0", "Cause": "16", **customer},
            {"Event": "QueueCallerAbandon", "Timestamp": "115.0", "Queue": "support", **customer},
            {"Event": "Hangup", "Timestamp": "115.0", "Cause": "16", **customer},
        ]
    )
    result = replay(items)
    (rec,) = result.records
    assert rec.answered_at == 101.0  # the agent was bridged with the caller
    assert rec.time_to_answer_s is None or rec.time_to_answer_s >= 0, f"time_to_answer_s = {rec.time_to_answer_s}"
    assert rec.offered_at is None or rec.offered_at <= rec.answered_at, f"offered at {rec.offered_at}"
    check_invariants(result)
