"""Helpers every call-store test folder shares (tests/store, tests/store_pg, tests/store_contract).

Replaying captures into records, submitting them, waiting for the writer, and opening stores that
are always closed (and writers that are always stopped) at the end of a test, whatever the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.engine.model import CallEnded, CallRecord
from pbx_bridge.engine.tracker import CallTracker
from pbx_bridge.store.common import BatchingStore

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"

S = TypeVar("S", bound=BatchingStore)


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


def submit_all(store: BatchingStore, records: list[CallRecord]) -> None:
    """Submit each record with its service day (the store only batches them: nothing is written yet)."""
    for record in records:
        store.submit(record, service_day(record))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` holds, failing the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def opened_stores(build: Callable[..., S]) -> AsyncIterator[Callable[..., Awaitable[S]]]:
    """``await make(**kwargs)``: ``build(**kwargs)`` opened; every store made is closed on exit, whatever happens."""
    stores: list[S] = []

    async def make(**kwargs: Any) -> S:
        store = build(**kwargs)
        stores.append(store)
        await store.open()
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.close()


@contextlib.asynccontextmanager
async def writer_running(store: S) -> AsyncIterator[S]:
    """The store with its writer task (``run()``) going; the task is cancelled and awaited on exit."""
    task = asyncio.create_task(store.run())
    try:
        yield store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
