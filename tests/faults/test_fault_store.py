"""The call store locked by another process for 10 s, then full, while calls go on ending.

Writes must wait in memory and be retried, nothing may be lost once the condition clears, the
condition must show in ``/metrics`` (``pbx_bridge_store_errors_total``), ``/healthz`` and the
logs, and the daemon must go on reading AMI meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from faults_support import (
    Event,
    Feeder,
    Json,
    Running,
    by_customer,
    check_reference,
    consumed,
    db_file,
    fault_settings,
    healthz,
    http_get,
    make_day,
    metric,
    query,
    reference,
    relogged,
    running_daemon,
    stored_calls,
    wait_for,
)
from structlog.testing import capture_logs

from pbx_bridge.emulator import AmiEmulator
from pbx_bridge.store.sqlite import SqliteStore

pytestmark = pytest.mark.slow

SEED = 55
LOCK_S = 10.0
STEPS = 20
RETRY_LOG = "store write failed; batch kept for a retry"
MAX_PAGES = 1_073_741_823  # SQLite's default max_page_count


@dataclass(frozen=True)
class Look:
    """One look at the daemon while the store is failing."""

    engine_events: int
    ami_events: float
    store_errors: float
    health_status: int
    health: Json
    written: int


async def look(r: Running) -> Look:
    status, health = await healthz(r.url)
    _, body = await http_get(f"{r.url}/metrics")
    return Look(
        engine_events=r.daemon.tracker.stats.events,
        ami_events=metric(body, "pbx_bridge_ami_events_total"),
        store_errors=metric(body, "pbx_bridge_store_errors_total"),
        health_status=status,
        health=health,
        written=r.daemon.store.stats.written,  # type: ignore[attr-defined]
    )


async def feed_in_steps(r: Running, feeder: Feeder, events: list[Event], seconds: float) -> list[Look]:
    """Emit ``events`` in ``STEPS`` parts spread over ``seconds``; look at the daemon after each."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    size = -(-len(events) // STEPS)
    looks = []
    for step in range(STEPS):
        await feeder.emit(events[step * size : (step + 1) * size])
        await consumed(r, feeder)
        looks.append(await look(r))
        await asyncio.sleep(max(0.0, start + seconds * (step + 1) / STEPS - loop.time()))
    return looks


def failures(logs: list[MutableMapping[str, Any]], word: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == RETRY_LOG and word in str(e.get("error", ""))]


def check_condition(looks: list[Look], word: str) -> dict[str, object]:
    """What every look during a store failure must show; returns the problems found."""
    problems: dict[str, object] = {}
    if any(lk.health_status != 200 for lk in looks):
        problems["/healthz not 200 while AMI is up"] = [lk.health_status for lk in looks]
    engine = [lk.engine_events for lk in looks]
    ami = [lk.ami_events for lk in looks]
    if any(b <= a for a, b in itertools.pairwise(engine)) or any(b <= a for a, b in itertools.pairwise(ami)):
        problems["AMI events stopped being consumed"] = {"engine": engine, "metric": ami}
    if looks[-1].store_errors < 1:
        problems["pbx_bridge_store_errors_total did not move"] = [lk.store_errors for lk in looks]
    errors = [str(lk.health.get("store_last_error")) for lk in looks]
    if not any(word in e for e in errors):
        problems[f"/healthz store_last_error never said {word!r}"] = errors
    if not any((lk.health.get("store_pending") or 0) > 0 for lk in looks):
        problems["/healthz store_pending never showed the backlog"] = [lk.health.get("store_pending") for lk in looks]
    return problems


async def test_store_locked_then_full_loses_nothing_and_never_stops_the_stream(
    emulator: AmiEmulator, tmp_path: Path
) -> None:
    """Locked 10 s, then full: the backlog waits, retries, lands whole; AMI and HTTP carry on."""
    data = tmp_path / "data"
    settings = fault_settings(emulator.port, data)
    day = make_day(SEED, hours=1.0)
    expected = reference(day.events, settings)
    check_reference(day, expected)
    n = len(day.events)
    warm, locked, full = day.events[: n // 6], day.events[n // 6 : n // 2], day.events[n // 2 : 3 * n // 4]
    rest = day.events[3 * n // 4 :]
    problems: dict[str, object] = {}

    with capture_logs() as logs:
        async with running_daemon(settings) as r:
            store = r.daemon.store
            assert isinstance(store, SqliteStore)
            await relogged(r, emulator, 1, logs)
            feeder = Feeder(emulator)
            await feeder.emit(warm)
            await consumed(r, feeder)
            await wait_for(lambda: store.stats.pending == 0, what="the store to catch up")
            written = store.stats.written
            assert written > 0

            # -- another process holds the database's write lock for LOCK_S seconds
            other = sqlite3.connect(db_file(data), isolation_level=None, timeout=30, check_same_thread=False)
            try:
                await asyncio.to_thread(other.execute, "BEGIN EXCLUSIVE")
                looks = await feed_in_steps(r, feeder, locked, LOCK_S)
                stats = store.stats
            finally:
                await asyncio.to_thread(other.execute, "COMMIT")
                await asyncio.to_thread(other.close)
            for key, value in check_condition(looks, "locked").items():
                problems[f"locked: {key}"] = value
            if stats.written != written or any(lk.written != written for lk in looks):
                problems["locked: calls written through another process's exclusive lock?"] = stats
            if stats.pending == 0 or not stats.retrying:
                problems["locked: no backlog kept for a retry"] = stats
            if not failures(logs, "locked"):
                problems["locked: no log line for the failed writes"] = RETRY_LOG
            await wait_for(lambda: store.stats.pending == 0, timeout=60, what="the backlog written after the lock")
            errors_after_lock = store.stats.write_errors

            # -- the disk fills up: SQLite may not grow the file by a single page
            writer = store._writer  # max_page_count is per connection: set it on the store's own
            assert writer is not None
            pages = next(iter(await writer.execute_fetchall("PRAGMA page_count")))[0]
            await writer.execute(f"PRAGMA max_page_count = {int(pages)}")
            try:
                looks = await feed_in_steps(r, feeder, full, 3.0)
                stats = store.stats
            finally:
                await writer.execute(f"PRAGMA max_page_count = {MAX_PAGES}")
            for key, value in check_condition(looks, "full").items():
                problems[f"full: {key}"] = value
            if stats.write_errors <= errors_after_lock:
                problems["full: no write failed although the file could not grow"] = stats
            if not failures(logs, "full"):
                problems["full: no log line for the failed writes"] = RETRY_LOG
            await wait_for(lambda: store.stats.pending == 0, timeout=60, what="the backlog written after the disk")

            await feeder.emit(rest)
            await consumed(r, feeder)
            await wait_for(lambda: store.stats.pending == 0, what="the store to catch up")
            final = store.stats
            assert await r.stop() == 0

    if final.dropped or final.rejected:
        problems["writes dropped or rejected"] = final
    stored = stored_calls(data)
    want = {cid: rec.to_dict() for cid, rec in expected.records.items()}
    missing = sorted(set(want) - set(stored))
    if missing:
        problems["calls never stored"] = missing
    different = sorted(cid for cid in set(want) & set(stored) if stored[cid] != want[cid])
    if different:
        problems["calls stored differently from an uninterrupted replay"] = different
    extra = sorted(set(stored) - set(want))
    if extra:
        problems["calls stored that the day never had"] = extra
    doubled = {num: ids for num, ids in by_customer(stored).items() if len(ids) > 1}
    if doubled:
        problems["customer calls stored twice"] = doubled
    markers = query(data, "SELECT call_id FROM open_calls")
    if markers:
        problems["open-call markers left behind"] = markers
    assert not problems, pformat(problems, width=120)
