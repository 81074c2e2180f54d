"""The AMI connection cut at random points of a long mixed day: nothing lost, nothing doubled.

A generated day (a few hundred calls, every behaviour of the generator) is played verbatim through
the emulator. At 20 seeded random points the emulator drops the bridge's connection; up to 150
events go by while it is away (lost for good), then it logs in again and resyncs. What the daemon
stored is compared with a fresh in-process tracker fed the same stream without any cut.

Two smaller tests pin down the two ways a reconnect has been seen to split a call: events arriving
while the bridge resyncs, and a call whose start fell in a gap.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from faults_support import (
    SECRET,
    USER,
    Feeder,
    Reference,
    by_customer,
    check_reference,
    consumed,
    fault_settings,
    make_day,
    reference,
    relogged,
    running_daemon,
    stored_calls,
    wait_for,
)
from structlog.testing import capture_logs

from pbx_bridge.config import Settings
from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.emulator.replay import read_capture
from pbx_bridge.engine.model import iso

SEED = 10
CUTS = 20
# Events emitted while the bridge is away, per cut (0: a reconnect that loses nothing).
MAX_LOST = 150


def cut_points(n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``CUTS`` gaps ``[a, b)`` spread over the stream, one per equal slice, never touching."""
    slice_len = (n - 400) // CUTS
    gaps = []
    for k in range(CUTS):
        a = 200 + k * slice_len + rng.randrange(0, slice_len - MAX_LOST - 50)
        gaps.append((a, a + rng.randint(0, MAX_LOST)))
    return gaps


def affected(ref: Reference, call_id: str, gap: tuple[int, int]) -> bool:
    """The call was up while the bridge was away, or across its reconnect."""
    first, last = ref.span(call_id)
    a, b = gap
    return first <= (b - 1 if b > a else a - 1) and last >= a


def seen(ref: Reference, call_id: str, lost: set[int]) -> bool:
    """At least one event of the call reached the bridge."""
    return any(i not in lost for i in ref.events[call_id])


@pytest.mark.slow
async def test_cut_at_twenty_random_points_stores_every_seen_call_once(emulator: AmiEmulator, tmp_path: Path) -> None:
    """Every call seen at least partly is stored once; gap calls are partial, the others exact."""
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    day = make_day(SEED)
    expected = reference(day.events, settings)
    check_reference(day, expected)
    assert len(expected.records) >= 200
    rng = random.Random(SEED)
    gaps = cut_points(len(day.events), rng)
    lost = {i for a, b in gaps for i in range(a, b)}

    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            await relogged(r, emulator, 1, logs)
            feeder = Feeder(emulator)
            index = 0
            for n, (a, b) in enumerate(gaps, start=2):
                await feeder.emit(day.events[index:a])
                await consumed(r, feeder)
                emulator.drop_clients()
                # Nobody is logged in now, and nothing below yields to the loop: these are lost.
                for _, headers in day.events[a:b]:
                    assert not emulator.logged_in_clients
                    emulator.emit_nowait(headers)
                    feeder.lost += 1
                index = b
                await relogged(r, emulator, n, logs)
            await feeder.emit(day.events[index:])
            await consumed(r, feeder)
            await wait_for(lambda: r.daemon.store.stats.pending == 0, what="the store to catch up")
            left_open = sorted(c.call_id for c in r.daemon.tracker.open_calls)
            reconnects = r.daemon.ami.counters.reconnects
            assert await r.stop() == 0

    assert reconnects >= CUTS
    assert feeder.lost == len(lost)
    stored = stored_calls(data)
    records = expected.records
    problems: dict[str, object] = {}
    doubled = {n: ids for n, ids in by_customer(stored).items() if len(ids) > 1}
    if doubled:
        problems["customer calls stored under two call ids"] = doubled
    strangers = {cid: (rec["direction"], rec["partial"]) for cid, rec in stored.items() if cid not in records}
    if strangers:
        problems["records under call ids an uninterrupted replay never produces"] = strangers
    missing = sorted(cid for cid in records if seen(expected, cid, lost) and cid not in stored)
    if missing:
        problems["calls the bridge saw that are not stored"] = missing
    if left_open:
        problems["calls still open in the engine after the PBX ended every call"] = left_open
    not_partial: list[str] = []
    different: list[dict[str, dict[str, tuple[object, object]]]] = []
    for cid, record in stored.items():
        if cid not in records:
            continue
        if any(affected(expected, cid, g) for g in gaps):
            if not record["partial"]:
                not_partial.append(cid)
        elif record != (want := records[cid].to_dict()):
            different.append({cid: {k: (record.get(k), v) for k, v in want.items() if record.get(k) != v}})
    if not_partial:
        problems["calls up during a gap stored as complete"] = not_partial
    last_event = iso(day.ts(len(day.events) - 1))
    future = {cid: rec["ended_at"] for cid, rec in stored.items() if rec["ended_at"] > last_event}
    if future:
        problems[f"calls ending after the last event the PBX sent ({last_event}): times must come from the stream"] = (
            future
        )
    if different:
        problems["calls wholly outside the gaps measured differently (stored, uninterrupted)"] = different
    assert not problems, pformat(problems, width=120)

    partial = [cid for cid, rec in stored.items() if rec["partial"]]
    assert len(partial) >= CUTS // 2, "the cuts went through calls: many records must be partial"
    assert len(stored) - len(partial) >= len(records) // 3, "most calls lie outside the gaps"


# ----------------------------------------------------------------------------- the two ways a reconnect splits a call

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def capture_reference(name: str, settings: Settings) -> tuple[list[dict[str, str]], Reference]:
    events = [(float(h.get("Timestamp", ts)), h) for ts, h in read_capture(TRACES / f"{name}.ami").events]
    return [h for _, h in events], reference(events, settings)


class ResyncRacer(AmiEmulator):
    """An emulator whose PBX goes on while a client resyncs.

    ``during_resync`` events are emitted right after the emulator has answered a
    ``CoreShowChannels``: on the wire they follow its snapshot, before the client's next action
    (``QueueStatus``) is answered, as on a busy Asterisk.
    """

    during_resync: list[dict[str, str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.during_resync = []

    def _on_action(self, client: Any, raw: Mapping[str, str]) -> None:
        super()._on_action(client, raw)
        action = {k.lower(): v for k, v in raw.items()}.get("action", "").strip().lower()
        if action == "coreshowchannels" and self.during_resync:
            events, self.during_resync = self.during_resync, []
            for headers in events:
                self.emit_nowait(headers)


async def test_a_call_that_starts_during_a_resync_is_measured_whole(tmp_path: Path) -> None:
    """A call whose first events arrive while the bridge resyncs is stored once, complete.

    Its channels are not in the ``CoreShowChannels`` snapshot (they did not exist yet), but
    every one of its events reaches the bridge after the reconnect.
    """
    emu = ResyncRacer(host="127.0.0.1", port=0, username=USER, secret=SECRET)
    await emu.start()
    try:
        data = tmp_path / "data"
        settings = fault_settings(emu.port, data)
        events, expected = capture_reference("a", settings)
        (call_id,) = expected.records
        with capture_logs() as logs:
            async with running_daemon(settings) as r:
                await relogged(r, emu, 1, logs)
                feeder = Feeder(emu)
                emu.drop_clients()
                emu.during_resync = events[:40]  # the call arrives and is offered
                feeder.delivered += 40
                await relogged(r, emu, 2, logs)
                await feeder.emit([(0.0, h) for h in events[40:]])
                await consumed(r, feeder)
                assert await r.stop() == 0
    finally:
        await emu.close()
    stored = stored_calls(data)
    assert set(stored) == {call_id}, f"one call, stored as {sorted(stored)}"
    want = expected.records[call_id].to_dict()
    diff = {k: (stored[call_id].get(k), v) for k, v in want.items() if stored[call_id].get(k) != v}
    assert not diff, f"measured differently (stored, uninterrupted): {pformat(diff, width=120)}"


async def test_a_gap_hiding_the_start_of_a_call_stores_it_once(emulator: AmiEmulator, tmp_path: Path) -> None:
    """A callback whose set-up fell in a gap is stored once (partial), not once per leg seen afterwards.

    After the gap the bridge sees only the end: the customer hangs up, then the agent's leg.
    """
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    events, expected = capture_reference("o", settings)
    (call_id,) = expected.records
    hangup = next(i for i, h in enumerate(events) if h["Event"] == "HangupRequest")
    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            await relogged(r, emulator, 1, logs)
            feeder = Feeder(emulator)
            emulator.drop_clients()
            for headers in events[:hangup]:  # lost: nobody is logged in
                emulator.emit_nowait(headers)
            await relogged(r, emulator, 2, logs)
            await feeder.emit([(0.0, h) for h in events[hangup:]])
            await consumed(r, feeder)
            assert await r.stop() == 0
    stored = stored_calls(data)
    assert set(stored) == {call_id}, f"one call, stored as {sorted(stored)}"
    assert stored[call_id]["partial"]
