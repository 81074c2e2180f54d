"""Fixtures of the call-store tests: records replayed from real captures, and stores that always close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from store_helpers import FAST, StoreFactory, replay_capture

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store import SqliteStore


@pytest.fixture(scope="session")
def busy_hour() -> list[CallRecord]:
    """The 50 calls of ``q_busy_hour.ami``."""
    records = replay_capture("q_busy_hour")
    assert len(records) == 50
    return records


@pytest.fixture(scope="session")
def utf8_calls() -> list[CallRecord]:
    """The three calls of ``utf8_names.ami`` (Chinese caller names)."""
    return replay_capture("utf8_names")


@pytest.fixture(scope="session")
def now(busy_hour: list[CallRecord]) -> float:
    """A wall clock just after the busy hour, so retention never depends on today's date."""
    return max(r.ended_at for r in busy_hour) + 3600.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database lives."""
    return tmp_path / "data" / "calls.sqlite3"


@pytest.fixture
async def make_store(db_path: Path, now: float) -> AsyncIterator[StoreFactory]:
    """``await make_store(**kwargs)``: an open store, closed at the end of the test whatever happens."""
    stores: list[SqliteStore] = []

    async def make(**kwargs: Any) -> SqliteStore:
        options: dict[str, Any] = {**FAST, "clock": lambda: now, **kwargs}
        store = SqliteStore(options.pop("path", db_path), **options)
        stores.append(store)
        await store.open()
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> SqliteStore:
    """An open store with test timings (no writer task running)."""
    return await make_store()


@pytest.fixture
async def running(store: SqliteStore) -> AsyncIterator[SqliteStore]:
    """An open store with its writer task running."""
    task = asyncio.create_task(store.run())
    try:
        yield store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
