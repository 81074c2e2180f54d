"""The daemon through a real socket and panoramisk, against the AMI emulator."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from daemon_support import SECRET, Running, wait_for
from structlog.testing import capture_logs

from pbx_bridge import daemon as daemon_module
from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.emulator.replay import read_capture
from pbx_bridge.engine.model import CallEnded
from pbx_bridge.engine.tracker import CallTracker
from pbx_bridge.service import SQLITE_FILE

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
CAPTURES = sorted(p.name for p in TRACES.glob("*.ami"))


def replay_records(path: Path) -> dict[str, dict[str, Any]]:
    """What ``pbx-bridge replay --ignore-hours`` prints for a capture, by call id."""
    tracker = CallTracker()
    out: dict[str, dict[str, Any]] = {}
    for item in CaptureReader(path):
        for o in tracker.feed(item):
            if isinstance(o, CallEnded):
                out[o.record.call_id] = o.record.to_dict()
    for o in tracker.close_all():
        if isinstance(o, CallEnded):
            out[o.record.call_id] = o.record.to_dict()
    return out


def stored_records(data: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(data / SQLITE_FILE) as db:
        rows = db.execute("SELECT call_id, record_json FROM calls").fetchall()
    assert len(rows) == len({r[0] for r in rows}), "a call was stored twice"
    return {call_id: json.loads(body) for call_id, body in rows}


async def play_verbatim(emu: AmiEmulator, path: Path, r: Running, logins: int = 1) -> int:
    """Emit a capture's events with their own ids and timestamps; follow its reconnects."""
    capture = read_capture(path)
    sent = 0
    for index, (_, headers) in enumerate(capture.events):
        if index in capture.reconnects:
            await emu.drain(5)
            await wait_for(lambda n=sent: r.daemon.tracker.stats.events >= n, what="events before the reconnect")
            emu.drop_clients()
            logins += 1
            await wait_for(lambda n=logins: r.daemon.ami.counters.logins >= n, what="re-login")
            await emu.wait_logged_in(1)
        await emu.emit(headers)
        sent += 1
    await emu.drain(10)
    return sent


async def consumed(r: Running, events: int) -> None:
    await wait_for(lambda: r.daemon.tracker.stats.events >= events, timeout=30, what=f"{events} events consumed")


@pytest.mark.parametrize("capture", CAPTURES)
async def test_daemon_stores_what_replay_prints(
    capture: str, emulator: AmiEmulator, start_daemon: Any, tmp_path: Path
) -> None:
    """Through the socket and panoramisk, the daemon stores exactly the records `replay` prints."""
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    sent = await play_verbatim(emulator, TRACES / capture, r)
    await consumed(r, sent)
    assert await r.stop() == 0
    stored = stored_records(tmp_path / "data")
    expected = replay_records(TRACES / capture)
    assert stored.keys() == expected.keys()
    for call_id, record in expected.items():
        assert stored[call_id] == record, call_id


async def test_metrics_and_health_are_served(emulator: AmiEmulator, start_daemon: Any) -> None:
    """/metrics exposes every contract family and /healthz reports the AMI connection."""
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    sent = await play_verbatim(emulator, TRACES / "q_busy_hour.ami", r)
    await consumed(r, sent)
    port = r.daemon.http_port
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    for family in (
        "pbx_bridge_calls_total",
        "pbx_bridge_violations_total",
        "pbx_bridge_ami_events_total",
        "pbx_bridge_ami_events_dropped_total",
        "pbx_bridge_ami_parse_errors_total",
        "pbx_bridge_ami_reconnects_total",
        "pbx_bridge_time_to_answer_seconds_bucket",
        "pbx_bridge_hold_seconds_bucket",
        "pbx_bridge_talk_seconds_bucket",
        "pbx_bridge_calls_waiting",
        "pbx_bridge_longest_wait_seconds",
        "pbx_bridge_calls_on_hold",
        "pbx_bridge_longest_hold_seconds",
        "pbx_bridge_calls_talking",
        "pbx_bridge_agents",
        "pbx_bridge_ami_connected",
        "pbx_bridge_last_event_age_seconds",
    ):
        assert f"\n{family}" in body, family
    assert 'pbx_bridge_calls_total{outcome="answered",queue="support"} 44.0' in body
    assert 'pbx_bridge_time_to_answer_seconds_bucket{le="9.0",queue="support"}' in body
    health = await asyncio.to_thread(
        lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
    )
    assert health["ami_connected"] is True


async def test_connection_cut_mid_call_loses_and_duplicates_nothing(
    emulator: AmiEmulator, start_daemon: Any, tmp_path: Path
) -> None:
    """Cutting the AMI connection at random points mid-stream stores every seen call once; gap calls are partial."""
    capture = read_capture(TRACES / "q_busy_hour.ami")
    events = capture.events
    rng = random.Random(20261123)
    cuts = sorted(rng.sample(range(200, len(events) - 200), 5))
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    logins = 1
    lost: set[str] = set()
    index = 0
    for cut in [*cuts, len(events)]:
        for _, headers in events[index:cut]:
            await emulator.emit(headers)
        index = cut
        if cut == len(events):
            break
        await emulator.drain(5)
        emulator.drop_clients()
        # A few events go by while the bridge is away: they are lost for good.
        for _, headers in events[index : index + 20]:
            if "Uniqueid" in headers:
                lost.add(headers.get("Linkedid", headers["Uniqueid"]))
            await emulator.emit(headers)
        index += 20
        logins += 1
        await wait_for(lambda n=logins: r.daemon.ami.counters.logins >= n, what="re-login")
        await emulator.wait_logged_in(1)
    await emulator.drain(10)
    await wait_for(lambda: not r.daemon.sink.pending, what="queue drained")
    await asyncio.sleep(0.3)
    assert await r.stop() == 0
    stored = stored_records(tmp_path / "data")
    expected = replay_records(TRACES / "q_busy_hour.ami")
    # Every call of the capture is stored exactly once (stored_records checks for duplicates)...
    assert set(expected) <= set(stored)
    # ...calls whose events fell in a gap are marked partial, the others are measured in full.
    for call_id, record in expected.items():
        if stored[call_id]["partial"]:
            continue
        assert stored[call_id] == record, call_id
    partial = {cid for cid, rec in stored.items() if rec["partial"]}
    assert partial, "the gaps cut through calls, so some records must be partial"
    assert r.daemon.ami.counters.reconnects >= len(cuts)


async def test_silent_peer_is_detected_and_reconnected(emulator: AmiEmulator, start_daemon: Any) -> None:
    """When Asterisk stops answering, the ping watchdog aborts the connection and panoramisk reconnects."""
    r = await start_daemon(emulator.port, ping_interval_s=0.3, ping_timeout_s=0.2)
    await emulator.wait_logged_in(1)
    emulator.set_silent(True)
    await wait_for(lambda: r.daemon.ami.counters.watchdog_aborts >= 1, what="watchdog abort")
    emulator.set_silent(False)
    await wait_for(lambda: r.daemon.ami.counters.logins >= 2, what="re-login after the silence")
    assert r.daemon.ami.counters.connected


async def test_wrong_password_is_a_clear_startup_error(emulator: AmiEmulator, start_daemon: Any) -> None:
    """A rejected AMI login at start-up ends the daemon with exit status 3 and says why."""
    r = await start_daemon(emulator.port, wait=False, secret="wrong-" + SECRET)
    status = await asyncio.wait_for(r.task, 10)
    assert status == 3
    assert r.daemon.ami.counters.login_failures >= 1
    assert "rejected" in (r.daemon.ami.counters.last_error or "")


async def test_stop_during_a_burst_writes_every_finished_call(
    emulator: AmiEmulator, start_daemon: Any, tmp_path: Path
) -> None:
    """Stopping mid-burst applies every event already received and stores every call it finished."""
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    capture = read_capture(TRACES / "q_busy_hour.ami")
    for _, headers in capture.events:
        emulator.emit_nowait(headers)
    await asyncio.sleep(0.05)  # part of the burst is still in flight
    assert await r.stop() == 0
    stored = stored_records(tmp_path / "data")
    assert len(stored) == r.daemon.tracker.stats.calls_ended


async def test_missing_core_events_are_reported(
    emulator: AmiEmulator, start_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When an AMI filter drops a core event type while calls flow, the daemon says which one, once."""
    monkeypatch.setattr(daemon_module, "CHECK_AFTER_HANGUPS", 50)
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    capture = read_capture(TRACES / "q_busy_hour.ami")
    sent = 0
    with capture_logs() as logs:
        for _, headers in capture.events:
            if headers.get("Event") != "BridgeEnter":
                await emulator.emit(headers)
                sent += 1
        await emulator.drain(10)
        await consumed(r, sent)
    missing = [e for e in logs if e["event"] == "ami_events_missing"]
    assert len(missing) == 1
    assert missing[0]["missing"] == ["BridgeEnter"]


def _markers(data: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(data / SQLITE_FILE) as db:
        return {cid: json.loads(body) for cid, body in db.execute("SELECT call_id, payload FROM open_calls")}


async def test_open_call_marker_is_written_refreshed_and_removed_with_the_call(
    emulator: AmiEmulator, start_daemon: Any, tmp_path: Path
) -> None:
    """A call in progress has a marker after the next store write; it follows the answer; the record replaces it."""
    events = read_capture(TRACES / "a.ami").events
    answer = next(i for i, (_, h) in enumerate(events) if h.get("DialStatus") == "ANSWER")
    connect = next(i for i, (_, h) in enumerate(events) if h.get("Event") == "AgentConnect")
    r = await start_daemon(emulator.port)
    await emulator.wait_logged_in(1)
    data = tmp_path / "data"

    for _, headers in events[:answer]:  # offered to the queue, ringing
        await emulator.emit(headers)
    await emulator.drain(5)
    await wait_for(lambda: bool(_markers(data)), what="an open-call marker")
    ((call_id, ringing),) = _markers(data).items()
    assert ringing["answered_at"] is None
    assert ringing["partial"] is True

    for _, headers in events[answer : connect + 1]:
        await emulator.emit(headers)
    await emulator.drain(5)
    await wait_for(lambda: (_markers(data).get(call_id) or {}).get("answered_at") is not None, what="marker refresh")

    for _, headers in events[connect + 1 :]:
        await emulator.emit(headers)
    await emulator.drain(5)
    await wait_for(lambda: call_id in stored_records(data), what="the record")
    await wait_for(lambda: not _markers(data), what="the marker removed")
    assert await r.stop() == 0
    assert stored_records(data)[call_id]["answered_at"] is not None
