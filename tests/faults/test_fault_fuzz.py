"""A million fuzzed AMI frames through the parser, the decoder and the engine; then 20 000 through a socket.

In process, every frame is accounted for: the parser counts each block it was sent as a frame,
garbage or oversize; the decoder turns each frame into an event or counts it as a response; the
engine counts each event as ignored by type, unhandled, or handled (and unplaced when it fits
nowhere). Whatever the engine outputs must survive what the daemon does with it (JSON with no
NaN, a service day, a live message). Through the socket, the daemon must survive and answer.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from faults_fuzz import FrameFuzzer
from faults_support import (
    START,
    Feeder,
    died,
    fault_settings,
    http_get,
    make_day,
    metric,
    reference,
    relogged,
    running_daemon,
    serving,
    stored_calls,
    wait_for,
)
from structlog.testing import capture_logs

from pbx_bridge.ami.events import AmiEvent, EventDecoder, StreamStart
from pbx_bridge.ami.frames import FrameParser
from pbx_bridge.config import Settings
from pbx_bridge.daemon import live_message
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.emulator.replay import read_capture
from pbx_bridge.engine.model import CallEnded, Output
from pbx_bridge.engine.tracker import IGNORED_EVENTS, CallTracker
from pbx_bridge.replay import build_tracker
from pbx_bridge.store.model import check_service_day

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
FRAMES = 1_000_000
SOCKET_FRAMES = 20_000
MAX_FRAME = 8192  # small, so oversize frames are cheap to make
EXAMPLES = 5


def handled_by_engine(name: str) -> bool:
    """Whether the engine dispatches events of this type (probed through its public API)."""
    if name in IGNORED_EVENTS:
        return False
    tracker = CallTracker()
    tracker.feed(AmiEvent(name, 1.0, headers={"Event": name}))
    return name not in tracker.stats.unhandled


class Downstream:
    """What the daemon does with each engine output, minus the I/O; failures are kept, not raised."""

    def __init__(self, settings: Settings) -> None:
        self.service_day = settings.calendars.default.service_day
        self.records = 0
        self.errors: list[str] = []

    def take(self, outputs: list[Output]) -> None:
        for out in outputs:
            try:
                live_message(out)
                if isinstance(out, CallEnded):
                    record = out.record
                    json.dumps(record.to_dict(), allow_nan=False)  # the store's encoding
                    check_service_day(self.service_day(record.arrived_at).isoformat())
                    self.records += 1
            except Exception as exc:
                self.fail("record", exc, out)

    def draft(self, tracker: CallTracker) -> None:
        """What the daemon stores as an open-call marker (``Daemon._note_open``)."""
        for call in tracker.open_calls[:3]:
            try:
                draft = tracker.draft(call.call_id)
                if draft is not None:
                    json.dumps(draft.to_dict(), allow_nan=False)
            except Exception as exc:
                self.fail("open-call marker", exc, call.call_id)

    def fail(self, what: str, exc: Exception, item: object) -> None:
        kind = f"{what}: {type(exc).__name__}"
        if sum(e.startswith(kind) for e in self.errors) < 2:
            self.errors.append(f"{kind}: {exc} in {item!r}"[:500])
        else:
            self.errors.append(kind)


@pytest.mark.slow
def test_a_million_fuzzed_frames_are_all_accounted_for(tmp_path: Path) -> None:
    """No crash; sent blocks = frames + garbage + oversize; events = ignored + unhandled + handled."""
    settings = fault_settings(5038, tmp_path / "data")
    fuzzer = FrameFuzzer(seed=20261123, max_frame_bytes=MAX_FRAME)
    parser = FrameParser(max_frame_bytes=MAX_FRAME)
    decoder = EventDecoder()
    tracker = build_tracker(settings)
    downstream = Downstream(settings)
    handled: dict[str, bool] = {}
    names: Counter[str] = Counter()
    starts = 0
    crashes: list[str] = []
    now = time.time()
    for n, chunk in enumerate(fuzzer.chunks(FRAMES)):
        for item in parser.feed(chunk):
            event = decoder.decode(item, fallback_clock=now)
            if event is None:
                continue
            if isinstance(event, StreamStart):
                starts += 1
            else:
                names[event.name] += 1
            try:
                downstream.take(tracker.feed(event))
            except Exception as exc:
                crashes.append(f"{type(exc).__name__}: {exc} on {event!r}"[:600])
        if n % 64 == 0:
            # The daemon's ticker, and the drafts it stores as open-call markers.
            try:
                downstream.take(tracker.tick(decoder.last_ts))
            except Exception as exc:
                crashes.append(f"{type(exc).__name__}: {exc} (tick)"[:600])
            downstream.draft(tracker)
    try:
        downstream.take(tracker.close_all())
    except Exception as exc:
        crashes.append(f"{type(exc).__name__}: {exc} (close_all)"[:600])

    wire, ps, es = fuzzer.wire, parser.stats, tracker.stats
    for name in names:
        handled.setdefault(name, handled_by_engine(name))
    ignored = sum(c for name, c in names.items() if name in IGNORED_EVENTS)
    dispatched = sum(c for name, c in names.items() if handled[name])
    unhandled = {name: c for name, c in names.items() if name not in IGNORED_EVENTS and not handled[name]}
    problems: dict[str, Any] = {}
    if crashes:
        problems[f"engine raised ({len(crashes)} times)"] = crashes[:EXAMPLES]
    kinds = Counter(":".join(e.split(":")[:2]) for e in downstream.errors)
    if downstream.errors:
        problems["engine output the daemon cannot store or publish"] = {
            "counts": dict(kinds),
            "examples": [e for e in downstream.errors if len(e) > 60],
        }
    accounting = {
        "frames sent": wire.frames,
        "blocks sent": wire.blocks,
        "parsed + garbage + oversize": ps.frames + ps.garbage + ps.oversize,
        "banners sent/parsed": (wire.banners, ps.banners),
        "oversize sent/counted": (wire.oversize, ps.oversize),
        "frames = events + responses": (ps.frames, sum(names.values()) + decoder.responses),
        "engine events / decoded": (es.events, sum(names.values())),
        "stream starts": (es.stream_starts, starts),
        "ignored + dispatched + unhandled": (ignored + dispatched + sum(unhandled.values()), sum(names.values())),
        "engine unhandled": (es.unhandled, unhandled),
        "unplaced <= dispatched": (es.unplaced_total, dispatched),
    }
    if not (
        wire.frames >= FRAMES
        and wire.blocks == ps.frames + ps.garbage + ps.oversize
        and wire.banners == ps.banners == starts == es.stream_starts
        and wire.oversize <= ps.oversize
        and ps.frames == sum(names.values()) + decoder.responses
        and es.events == sum(names.values())
        and es.unhandled == unhandled
        and es.unplaced_total <= dispatched
    ):
        problems["counters do not account for every frame"] = accounting
    assert not problems, pformat(problems, width=140)
    # The fuzz reached every corner it should: garbage, oversize, bad UTF-8, unknown types, real calls.
    assert ps.garbage and ps.oversize and ps.decode_errors and ps.malformed_lines and unhandled
    assert downstream.records > 1000 and dispatched > 100_000


async def test_twenty_thousand_fuzzed_frames_through_the_socket_leave_the_daemon_serving(
    emulator: AmiEmulator, tmp_path: Path
) -> None:
    """The daemon reads fuzzed bytes off its AMI socket, survives, answers /healthz and still measures."""
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    # Shutdown makes panoramisk drop the connection (as it should): keep this stream on one connection.
    fuzzer = FrameFuzzer(seed=7, max_frame_bytes=1 << 20, allow_shutdown=False, oversize_rate=0.0005)
    later = make_day(5, hours=0.2, start=START + 10 * 86_400)
    expected = reference(later.events, settings)
    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            await relogged(r, emulator, 1, logs)
            (client,) = list(emulator._clients)  # raw bytes: the emulator only sends well-formed events
            for chunk in fuzzer.chunks(SOCKET_FRAMES, batch=500):
                if r.task.done():
                    break
                client.writer.write(chunk)
                await emulator.drain(10)
            ami = r.daemon.ami.counters
            await wait_for(
                lambda: r.task.done() or (ami.parse_errors > 0 and r.daemon.sink.queue.empty()),
                what="the fuzz consumed",
            )
            health = await serving(r)
            assert died(r) is None, f"the daemon died on fuzzed AMI input: {died(r)}"
            assert health["ami_connected"] is True
            _, body = await http_get(f"{r.url}/metrics")
            assert metric(body, "pbx_bridge_ami_parse_errors_total") > 0
            survived = {
                "logins": ami.logins,
                "protocol_errors": ami.protocol_errors,
                "engine errors": r.daemon.tracker.stats.unplaced.get("engine error", 0),
                "task done": r.task.done(),
            }
            # Still measuring: calls after the fuzz (new ids) are stored as an uninterrupted replay measures them.
            feeder = Feeder(emulator)
            frames_before = ami.frames
            await feeder.emit(later.events)
            await wait_for(
                lambda: ami.frames >= frames_before + feeder.delivered and r.daemon.sink.queue.empty(),
                what="the calls after the fuzz consumed",
            )
            await wait_for(lambda: r.daemon.store.stats.pending == 0, what="the store to catch up")
            assert await r.stop() == 0
    assert survived == {"logins": 1, "protocol_errors": 0, "engine errors": 0, "task done": False}, survived
    stored = stored_calls(data)
    wrong = {cid for cid, rec in expected.records.items() if stored.get(cid) != rec.to_dict()}
    assert not wrong, f"calls after the fuzz not measured as without it: {sorted(wrong)}"


@pytest.mark.parametrize("stamp", ["inf", "nan", "1e20", "-1e20"])
async def test_a_non_finite_or_absurd_timestamp_does_not_stop_the_daemon(
    stamp: str, emulator: AmiEmulator, tmp_path: Path
) -> None:
    """One event whose ``Timestamp`` is ``inf``, ``nan`` or out of range: the daemon goes on measuring."""
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    events = [h for _, h in read_capture(TRACES / "a.ami").events]
    (call_id,) = reference([(0.0, h) for h in events], settings).records
    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            await relogged(r, emulator, 1, logs)
            feeder = Feeder(emulator)
            bad = [dict(h, Timestamp=stamp) if h["Event"] == "Hangup" else h for h in events]
            await feeder.emit([(0.0, h) for h in bad])
            await wait_for(
                lambda: (
                    r.task.done()
                    or (r.daemon.ami.counters.frames >= feeder.delivered + 1 and r.daemon.sink.queue.empty())
                ),
                what="the call consumed",
            )
            await wait_for(lambda: r.task.done() or r.daemon.store.stats.pending == 0, what="the store to catch up")
            await serving(r)
            assert died(r) is None, f"the daemon died on one bad Timestamp: {died(r)}"
            assert await r.stop() == 0
    stored = stored_calls(data)
    assert list(stored) == [call_id]
