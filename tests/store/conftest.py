"""Fixtures of the SQLite store tests: stores on a file of the test's own, always closed.

The captured calls (``busy_hour``, ``utf8_calls``, ``now``) come from :mod:`store_contract.fixtures`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_contract.helpers import opened_stores

from .store_helpers import StoreFactory, new_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database lives."""
    return tmp_path / "data" / "calls.sqlite3"


@pytest.fixture
async def make_store(db_path: Path, now: float) -> AsyncIterator[StoreFactory]:
    """``await make_store(**kwargs)``: an open store, closed at the end of the test whatever happens."""
    async with opened_stores(lambda **kwargs: new_store(db_path, now, **kwargs)) as make:
        yield make
