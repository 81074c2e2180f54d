"""The synthetic call-centre day: deterministic, well-formed, shaped like the real captures."""

from __future__ import annotations

import collections
import hashlib
import json
import math
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pbx_bridge.ami.frames import Banner, Frame, FrameParser, encode_frame
from pbx_bridge.emulator import AmiEmulator, DayConfig, generate_day, play, read_capture, write_capture
from pbx_bridge.emulator.generator import CallMix, DayGenerator

from .conftest import TRACES, RawClient

START = 1_795_000_000.0
# Every behaviour often, so a short day covers all shapes.
BUSY_MIX = CallMix(
    direct=0.1, outbound=0.1, short_abandon=0.1, rona=0.2, hold=0.5, long_hold=0.4, end_on_hold=0.3,
    blind=0.15, attended=0.2, agent_hangs_up=0.4,
)
Event = tuple[float, dict[str, str]]


def day(seed: int = 1, **kw: Any) -> tuple[list[Event], list[dict[str, Any]], DayGenerator]:
    calls: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"seed": seed, "agents": 8, "calls_per_hour": 240, "hours": 0.5,
                                "start_epoch": START, "mix": BUSY_MIX}
    cfg = DayConfig(**(settings | kw))
    gen = DayGenerator(cfg, calls.append)
    return list(gen.events()), calls, gen


@cache
def busy_day() -> tuple[list[Event], list[dict[str, Any]], DayGenerator]:
    return day(seed=11)


@cache
def real_shapes() -> dict[str, set[tuple[str, ...]]]:
    """Header-name tuples per event type, over every real capture."""
    shapes: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for path in TRACES.glob("*.ami"):
        for item in FrameParser().feed(path.read_bytes()):
            if isinstance(item, Frame) and "Event" in item.headers:
                shapes[item.headers["Event"]].add(tuple(item.headers))
    return shapes


def digest(events: Iterable[Event]) -> str:
    h = hashlib.sha256()
    for _, headers in events:
        h.update(encode_frame(headers))
    return h.hexdigest()


def test_same_seed_same_day_other_seed_other_day() -> None:
    """A seed fixes every byte and every truth record."""
    a_events, a_calls, _ = day(seed=5)
    b_events, b_calls, _ = day(seed=5)
    c_events, _, _ = day(seed=6)
    assert digest(a_events) == digest(b_events)
    assert a_calls == b_calls
    assert digest(a_events) != digest(c_events)


def test_every_event_has_a_header_set_seen_in_a_real_capture() -> None:
    """Each generated event's header names, in order, match some real Asterisk 22 event of that type."""
    events, _, _ = busy_day()
    shapes = real_shapes()
    seen = collections.Counter(h["Event"] for _, h in events)
    for _, headers in events:
        assert tuple(headers) in shapes[headers["Event"]], headers
    # The busy mix exercises all of these.
    for name in ("AgentRingNoAnswer", "QueueCallerAbandon", "BlindTransfer", "AttendedTransfer", "LocalBridge",
                 "LocalOptimizationBegin", "BridgeMerge", "Hold", "Unhold", "DTMFBegin", "QueueMemberPause",
                 "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberStatus", "NewCallerid"):
        assert seen[name], name


def test_stream_is_well_formed() -> None:
    """Time never goes back; every channel that appears hangs up once; bridges open and close."""
    events, calls, _ = busy_day()
    live: dict[str, str] = {}
    bridges: dict[str, int] = {}
    prev = -math.inf
    for ts, h in events:
        assert ts >= prev
        prev = ts
        assert float(h["Timestamp"]) == pytest.approx(ts, abs=1e-6)
        name = h["Event"]
        if name == "Newchannel":
            assert h["Uniqueid"] not in live
            live[h["Uniqueid"]] = h["Channel"]
        elif name == "Hangup":
            assert live.pop(h["Uniqueid"]) == h["Channel"]
        elif "Uniqueid" in h:
            assert h["Uniqueid"] in live, h
        if name == "BridgeCreate":
            bridges[h["BridgeUniqueid"]] = 0
        elif name == "BridgeEnter":
            bridges[h["BridgeUniqueid"]] += 1
            assert int(h["BridgeNumChannels"]) == bridges[h["BridgeUniqueid"]]
        elif name == "BridgeLeave":
            bridges[h["BridgeUniqueid"]] -= 1
            assert int(h["BridgeNumChannels"]) == bridges[h["BridgeUniqueid"]]
        elif name == "BridgeDestroy":
            assert bridges.pop(h["BridgeUniqueid"]) == 0
    assert live == {}
    assert bridges == {}
    assert len(calls) > 50


def test_queue_positions_and_counts_add_up() -> None:
    """Join positions count the callers already waiting; Leave's Count is what is left."""
    events, _, _ = busy_day()
    waiting: dict[str, list[str]] = collections.defaultdict(list)
    for _, h in events:
        if h["Event"] == "QueueCallerJoin":
            waiting[h["Queue"]].append(h["Uniqueid"])
            assert int(h["Position"]) == int(h["Count"]) == len(waiting[h["Queue"]])
        elif h["Event"] == "QueueCallerLeave":
            q = waiting[h["Queue"]]
            assert int(h["Position"]) == q.index(h["Uniqueid"]) + 1
            q.remove(h["Uniqueid"])
            assert int(h["Count"]) == len(q)
    assert all(not q for q in waiting.values())


def test_agents_take_one_call_at_a_time_and_only_when_available() -> None:
    """A queue agent never has two channels at once, and is rung only while logged in and unpaused."""
    events, _, gen = busy_day()
    members = {a.ext for a in gen.agents if a.queues}
    live: dict[str, str] = {}
    state: dict[tuple[str, str], str] = {}
    for _, h in events:
        name = h["Event"]
        if name == "Newchannel" and h["Channel"].startswith("PJSIP/") and h["CallerIDNum"] in members:
            ext = h["CallerIDNum"]
            assert ext not in live, f"{ext} rung while busy"
            live[ext] = h["Uniqueid"]
        elif name == "Hangup" and live.get(h["CallerIDNum"]) == h["Uniqueid"]:
            del live[h["CallerIDNum"]]
        elif name in ("QueueMemberAdded", "QueueMemberPause"):
            state[(h["MemberName"], h["Queue"])] = "paused" if h["Paused"] == "1" else "ready"
        elif name == "QueueMemberRemoved":
            state[(h["MemberName"], h["Queue"])] = "out"
        elif name == "AgentCalled":
            assert state.get((h["MemberName"], h["Queue"])) == "ready", h["MemberName"]


def test_truth_records_are_complete_and_consistent() -> None:
    """Every call has the truth fields the checker reads, with durations that add up."""
    _, calls, _ = busy_day()
    fields = {"call_id", "direction", "caller_number", "dialed", "queue", "arrival_epoch", "answer_epoch",
              "answered_by", "seconds_to_answer", "ring_attempts", "holds", "transfers", "end_epoch",
              "hangup_first", "abandoned", "abandon_wait_seconds", "talk_seconds"}
    kinds: collections.Counter[str] = collections.Counter()
    for c in calls:
        assert fields <= c.keys(), c["call_id"]
        assert c["hangup_first"] in ("caller", "agent", "customer")
        assert c["end_epoch"] > c["arrival_epoch"]
        if c["answer_epoch"] is not None:
            assert c["seconds_to_answer"] == pytest.approx(c["answer_epoch"] - c["arrival_epoch"], abs=0.002)
            assert c["talk_seconds"] == pytest.approx(c["end_epoch"] - c["answer_epoch"], abs=0.002)
        if c["abandoned"]:
            assert c["abandon_wait_seconds"] == pytest.approx(c["end_epoch"] - c["arrival_epoch"], abs=0.002)
        else:
            assert c["answer_epoch"] is not None
        for attempt in c["ring_attempts"]:
            if "ring_end_epoch" in attempt:
                assert attempt["ring_end_epoch"] >= attempt["ring_start_epoch"]
        for h in c["holds"]:
            assert h["end_epoch"] - h["start_epoch"] == pytest.approx(h["seconds"], abs=0.002)
        for t in c["transfers"]:
            kinds[t["type"] + ("_aborted" if t.get("aborted") else "")] += 1
            assert t["from"] != t["to"]
        kinds[c["direction"]] += 1
        kinds["abandoned" if c["abandoned"] else "answered"] += 1
        kinds["hold_over_60"] += any(h["over_60s"] for h in c["holds"])
        kinds["ended_on_hold"] += c["ended_on_hold"]
        kinds["rona"] += any(a["outcome"].startswith("no-answer") for a in c["ring_attempts"])
        kinds[f"hangup_{c['hangup_first']}"] += 1
    for kind in ("blind", "attended", "attended_aborted", "inbound", "outbound", "abandoned", "answered",
                 "hold_over_60", "ended_on_hold", "rona", "hangup_agent", "hangup_caller", "hangup_customer"):
        assert kinds[kind], kind


def test_agent_intervals_cover_the_day() -> None:
    """The agents truth has login and availability layers with positive lengths."""
    _, _, gen = busy_day()
    rows = gen.agents_truth()
    assert {r["layer"] for r in rows} == {"login", "availability"}
    assert all(r["end_epoch"] >= r["start_epoch"] for r in rows)
    assert any(r["state"] == "paused" and r["reason"] for r in rows)


def test_written_capture_reparses_and_truth_loads(tmp_path: Path) -> None:
    """The capture file is banner + login + CRLF frames that FrameParser reads back whole."""
    cfg = DayConfig(seed=3, agents=6, calls_per_hour=120, hours=0.25, start_epoch=START)
    summary = write_capture(cfg, tmp_path / "day.ami", tmp_path / "day.json")
    data = (tmp_path / "day.ami").read_bytes()
    assert data.startswith(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n")
    parser = FrameParser(max_frame_bytes=1 << 16)
    items = parser.feed(data)
    assert parser.pending_bytes == 0
    assert parser.stats.errors == 0
    assert isinstance(items[0], Banner)
    frames = [i for i in items if isinstance(i, Frame)]
    assert len(frames) == summary.events + 3  # login response, FullyBooted, SuccessfulAuth
    truth = json.loads((tmp_path / "day.json").read_text(encoding="utf-8"))
    assert len(truth["calls"]) == summary.calls > 0
    assert truth["trace_file"] == "day.ami"
    assert truth["agents"]
    cap = read_capture(tmp_path / "day.ami")
    assert len(cap.events) == summary.events
    events, calls, _ = day(seed=3, agents=6, calls_per_hour=120, hours=0.25, mix=CallMix())
    assert [h for _, h in events] == [h for _, h in cap.events]
    assert calls == truth["calls"]


def test_generate_day_is_lazy_and_quick() -> None:
    """A 500-agent quarter hour streams without building the day in memory first."""
    stream = generate_day(2, 500, 5000, 0.25, START, noise=False)
    first = next(stream)
    assert first[1]["Event"] == "QueueMemberAdded"
    rest = sum(1 for _ in stream)
    assert rest > 10_000


async def test_generated_day_plays_through_the_emulator(emu: AmiEmulator) -> None:
    """A generated day goes through play() at full speed and reaches a client intact."""
    events = list(generate_day(4, 4, 120, 0.1, START))
    client = await RawClient.connect(emu.port)
    try:
        await client.login()
        await client.frame()
        sent = await play(emu, events, speed=math.inf, fresh_ids=False)
        got = [await client.frame() for _ in range(sent)]
        assert [h["Event"] for h in got] == [h["Event"] for _, h in events]
        assert emu.state.channels == {}
    finally:
        await client.close()
