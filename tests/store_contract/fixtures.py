"""Pytest plugin (listed in tests/conftest.py): the captured calls every call-store test replays."""

from __future__ import annotations

import pytest

from pbx_bridge.engine.model import CallRecord

from .helpers import replay_capture


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
