"""Pytest plugin (listed in tests/conftest.py): what every call-store test folder shares.

The captured calls the tests replay, and ``store`` / ``running`` over the nearest ``make_store``
(each of tests/store, tests/store_pg and tests/store_contract defines its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from pbx_bridge.engine.model import CallRecord

from .helpers import replay_capture, writer_running

if TYPE_CHECKING:  # the plugin loads for every test: no backend driver imported for it
    from .backends import Store, StoreFactory


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
async def store(make_store: StoreFactory) -> Store:
    """An open store with test timings (no writer task running)."""
    return await make_store()


@pytest.fixture
async def running(store: Store) -> AsyncIterator[Store]:
    """An open store with its writer task running."""
    async with writer_running(store) as started:
        yield started
