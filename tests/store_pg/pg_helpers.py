"""Helpers of the PostgreSQL store tests: replaying captures, reading the database from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.engine.model import CallEnded, CallRecord
from pbx_bridge.engine.tracker import CallTracker
from pbx_bridge.store.postgres import PostgresStore

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
# Tests run fast: short batches and lock waits, and a back-off that never grows past 0.2 s.
FAST: dict[str, Any] = {
    "batch_interval_s": 0.02,
    "lock_timeout_s": 0.05,
    "max_backoff_s": 0.2,
    "flush_timeout_s": 5.0,
    "connect_timeout_s": 5.0,
}
SITE = "north"

StoreFactory = Callable[..., Awaitable[PostgresStore]]
"""``await make_store(**kwargs)``: the ``make_store`` fixture."""


def replay_capture(name: str) -> list[CallRecord]:
    """Every call record of a capture, in the order the engine ended them."""
    tracker = CallTracker()
    records: list[CallRecord] = []
    for item in CaptureReader(TRACES / f"{name}.ami"):
        records.extend(out.record for out in tracker.feed(item) if isinstance(out, CallEnded))
    records.extend(out.record for out in tracker.close_all() if isinstance(out, CallEnded))
    return records


def service_day(record: CallRecord) -> str:
    """The call's service day (UTC here; the daemon gives the deployment's local date)."""
    return datetime.fromtimestamp(record.arrived_at, UTC).date().isoformat()


def submit_all(store: PostgresStore, records: list[CallRecord]) -> None:
    for record in records:
        store.submit(record, service_day(record))


async def fetch(dsn: str, sql: str, *params: object) -> list[asyncpg.Record]:
    """Rows of a query on a connection of its own (what another client sees)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


async def count(dsn: str, sql: str, *params: object) -> int:
    """One integer from a query on a connection of its own."""
    rows = await fetch(dsn, sql, *params)
    return int(rows[0][0])


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` holds, failing the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)
