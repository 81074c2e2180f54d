"""The PBX restarts (``core restart now``) while calls are up, then takes new calls.

The emulator sends ``Shutdown``, closes every connection, forgets every channel and refuses
connections for a second. The calls it cut must be closed (by the system, or as partial) and
stored once; the calls after the restart, with new uniqueids, must be measured completely.
"""

from __future__ import annotations

from pathlib import Path
from pprint import pformat

from faults_support import (
    Feeder,
    by_customer,
    check_reference,
    consumed,
    fault_settings,
    make_day,
    query,
    reference,
    relogged,
    running_daemon,
    stored_calls,
    wait_for,
)
from structlog.testing import capture_logs

from pbx_bridge.emulator import AmiEmulator


async def test_pbx_restart_closes_the_calls_it_cut_and_measures_the_new_ones(
    emulator: AmiEmulator, tmp_path: Path
) -> None:
    """Cut calls end by the system or partial, none stays open or is doubled; new calls are exact."""
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    before = make_day(31, hours=0.5)
    cut = len(before.events) // 2
    expected_before = reference(before.events, settings)
    # After the restart: another day's calls, starting two minutes later, with their own uniqueids.
    after = make_day(32, hours=0.5, start=before.ts(cut - 1) + 120)
    expected_after = reference(after.events, settings)
    check_reference(after, expected_after)
    assert not set(expected_before.records) & set(expected_after.records)

    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            await relogged(r, emulator, 1, logs)
            feeder = Feeder(emulator)
            await feeder.emit(before.events[:cut])
            await consumed(r, feeder)
            up = {c.call_id for c in r.daemon.tracker.live_calls()}
            assert len(up) >= 3, "calls are up when the PBX restarts"
            await emulator.restart(downtime=1.0)
            feeder.delivered += 1  # the Shutdown event
            await relogged(r, emulator, 2, logs)
            await feeder.emit(after.events)
            await consumed(r, feeder)
            await wait_for(lambda: r.daemon.store.stats.pending == 0, what="the store to catch up")
            left_open = sorted(c.call_id for c in r.daemon.tracker.open_calls)
            assert await r.stop() == 0

    stored = stored_calls(data)
    problems: dict[str, object] = {}
    if left_open:
        problems["calls the engine still holds open"] = left_open
    markers = [row[0] for row in query(data, "SELECT call_id FROM open_calls")]
    if markers:
        problems["open-call markers left behind"] = markers
    doubled = {n: ids for n, ids in by_customer(stored).items() if len(ids) > 1}
    if doubled:
        problems["customer calls stored under two call ids"] = doubled
    known = set(expected_before.records) | set(expected_after.records)
    strangers = sorted(set(stored) - known)
    if strangers:
        problems["records under call ids neither day has"] = {cid: stored[cid]["direction"] for cid in strangers}

    cut_calls, never, exact_wrong = [], [], []
    for cid, record in expected_before.records.items():
        first, last = expected_before.span(cid)
        if first >= cut:
            if cid in stored:
                never.append(cid)  # the restart took these calls away before they began
        elif last < cut:
            if stored.get(cid) != record.to_dict():
                exact_wrong.append(cid)
        else:
            cut_calls.append(cid)
    assert set(cut_calls) >= up
    if never:
        problems["calls stored that never reached the bridge"] = never
    if exact_wrong:
        problems["calls ended before the restart measured differently (or missing)"] = exact_wrong
    unsettled = {
        cid: (stored[cid]["hangup_by"], stored[cid]["partial"]) if cid in stored else None
        for cid in cut_calls
        if cid not in stored or not (stored[cid]["partial"] or stored[cid]["hangup_by"] == "system")
    }
    if unsettled:
        problems["calls cut by the restart not ended by the system nor partial (hangup_by, partial)"] = unsettled
    new_wrong = {}
    for cid, record in expected_after.records.items():
        want = record.to_dict()
        got = stored.get(cid)
        if got != want:
            new_wrong[cid] = None if got is None else {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if new_wrong:
        problems["calls after the restart not measured completely (stored, uninterrupted)"] = new_wrong
    assert not problems, pformat(problems, width=120)
