"""The daemon killed with SIGKILL mid-stream, then started again on the same store.

The daemon runs as a real process (``python -m pbx_bridge run``). It is killed while a burst of
events is still arriving; the PBX goes on meanwhile (those events are lost to the bridge); a new
process starts on the same data directory, resyncs and sees the rest of the day.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from faults_support import (
    Event,
    Feeder,
    by_customer,
    check_reference,
    db_file,
    end_process,
    integrity,
    make_day,
    process_events,
    process_health,
    process_settings,
    query,
    reference,
    spawn_daemon,
    stored_calls,
    wait_for,
)
from tooling import free_port

from pbx_bridge.emulator import AmiEmulator

pytestmark = pytest.mark.slow

SEED = 77


async def wait_health(port: int, what: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
    """Poll /healthz until ``ok(body)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ok(body := await process_health(port)):
        if loop.time() > deadline:
            raise AssertionError(f"/healthz never showed {what}: {body}")
        await asyncio.sleep(0.05)


async def paced(feeder: Feeder, events: list[Event]) -> None:
    """Emit like a busy PBX: small groups of events, a few milliseconds apart."""
    for i in range(0, len(events), 20):
        await feeder.emit(events[i : i + 20])
        await asyncio.sleep(0.005)


async def wait_events(port: int, count: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (seen := await process_events(port)) < count:
        if loop.time() > deadline:
            raise AssertionError(f"the daemon applied {seen} AMI events, not {count}")
        await asyncio.sleep(0.05)


def resyncs_logged(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '"ami_resynced"' in line)


async def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(emulator: AmiEmulator, tmp_path: Path) -> None:
    """WAL recovery keeps every commit; calls open at the kill are closed partial; no duplicate, no marker left."""
    data = tmp_path / "data"
    settings = process_settings(emulator.port, data)  # the reference is measured as the process measures
    day = make_day(SEED, hours=1.0)
    expected = reference(day.events, settings)
    check_reference(day, expected)
    records = expected.records
    n = len(day.events)
    n_a, n_c = int(n * 0.35), int(n * 0.55)
    http = free_port()
    feeder = Feeder(emulator)

    # Phase A: the first process sees the start of the day and commits it.
    first_log = tmp_path / "first.log"
    first = await spawn_daemon(emulator.port, http, data, first_log)
    try:
        await emulator.wait_logged_in(1, timeout=20)
        # Events reach the engine after the resync (see test_a_call_that_starts_during_a_resync...).
        await wait_for(lambda: resyncs_logged(first_log) >= 1, timeout=20, what="the first process's resync")
        await feeder.emit(day.events[:n_a])
        applied = feeder.delivered + 1  # + FullyBooted
        await wait_events(http, applied)
        await wait_health(http, "an empty store backlog", lambda h: h.get("store_pending") == 0)
        assert stored_calls(data), "calls ended in the first third"
        # Phase B: the PBX goes on at its pace; the process is killed while it reads and writes.
        pbx = asyncio.create_task(paced(feeder, day.events[n_a:n_c]))
        await wait_events(http, applied + 300)
        committed = stored_calls(data)  # what another connection sees is committed
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    await pbx  # the rest of phase B is lost to the bridge
    assert not emulator.logged_in_clients

    # What the killed process left: a write-ahead log to recover. Recover a copy, so that the
    # second process still finds the log and recovers the store itself.
    wal = db_file(data).with_name(db_file(data).name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the kill should leave a write-ahead log to recover"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in data.iterdir():
        shutil.copy2(f, copy / f.name)
    assert integrity(copy) == "ok"
    after_kill = stored_calls(copy)
    assert {cid: after_kill.get(cid) for cid in committed} == committed, "a committed call was lost or changed"
    markers = {row[0] for row in query(copy, "SELECT call_id FROM open_calls")}
    markers -= set(after_kill)  # a marker whose call is stored is settled already
    assert markers, "calls were up at the kill: they must have left open-call markers"

    # Phase C: a new process on the same store resyncs and sees the rest of the day.
    log = tmp_path / "second.log"
    second = await spawn_daemon(emulator.port, http, data, log)
    try:
        await emulator.wait_logged_in(1, timeout=20)
        await wait_for(lambda: resyncs_logged(log) >= 1, timeout=20, what="the second process's resync")
        delivered = feeder.delivered
        await feeder.emit(day.events[n_c:])
        await wait_events(http, feeder.delivered - delivered + 1)
        await wait_health(http, "an empty store backlog", lambda h: h.get("store_pending") == 0)
        health = await process_health(http)
    finally:
        status = await end_process(second)
    assert status == 0, log.read_text(errors="replace")[-3000:]
    assert health["open_calls"] == 0, "the PBX ended every call"

    assert integrity(data) == "ok"
    stored = stored_calls(data)
    problems: dict[str, object] = {}
    doubled = {number: ids for number, ids in by_customer(stored).items() if len(ids) > 1}
    if doubled:
        problems["customer calls stored under two call ids"] = doubled
    strangers = sorted(set(stored) - set(records))
    if strangers:
        problems["records under call ids the day never had"] = {cid: stored[cid]["direction"] for cid in strangers}
    left = query(data, "SELECT call_id FROM open_calls")
    if left:
        problems["open-call markers left behind"] = [row[0] for row in left]
    unsettled = sorted(cid for cid in markers if not (stored.get(cid) or {}).get("partial"))
    if unsettled:
        problems["calls open at the kill not closed as partial"] = {cid: cid in stored for cid in unsettled}
    changed = sorted(cid for cid, body in committed.items() if stored.get(cid) != body)
    if changed:
        problems["calls committed before the kill changed or lost afterwards"] = changed
    # Calls the first process surely saw (an event before the burst) must be there.
    missing_a = sorted(cid for cid in records if expected.span(cid)[0] < n_a and cid not in stored)
    if missing_a:
        problems["calls seen before the kill and never stored"] = missing_a
    # Calls of the second process: wholly after the restart they are exact; across it, partial.
    exact_wrong, not_partial, missing_c = [], [], []
    for cid, record in records.items():
        first_i, last_i = expected.span(cid)
        if last_i < n_c:
            continue
        if cid not in stored:
            missing_c.append(cid)
        elif first_i >= n_c:
            if stored[cid] != record.to_dict():
                exact_wrong.append(cid)
        elif not stored[cid]["partial"]:
            not_partial.append(cid)
    if missing_c:
        problems["calls seen after the restart and never stored"] = missing_c
    if exact_wrong:
        problems["calls wholly after the restart measured differently"] = exact_wrong
    if not_partial:
        problems["calls spanning the restart stored as complete"] = not_partial
    # Any other call (seen around the kill) either made it whole or is partial; never anything else.
    odd = [
        cid for cid, body in stored.items() if cid in records and not body["partial"] and body != records[cid].to_dict()
    ]
    if odd:
        problems["complete records that differ from the uninterrupted replay"] = odd
    assert not problems, pformat(problems, width=120)
