"""Fixtures of the PostgreSQL store tests: stores (site "north" unless told) on the test's database, always closed.

The cluster and its databases (``pg_cluster``, ``pg_dsn``, ``fresh_dsn``...) come from :mod:`store_pg.pg_fixtures`,
the captured calls (``busy_hour``, ``utf8_calls``, ``now``) from :mod:`store_contract.fixtures`: both plugins
are loaded by tests/conftest.py. Without the server binaries these tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from store_contract.helpers import opened_stores

from .pg_helpers import StoreFactory, new_store


@pytest.fixture
async def make_store(pg_dsn: str, now: float) -> AsyncIterator[StoreFactory]:
    """``await make_store(**kwargs)``: an open store (site "north" unless told), closed at the end whatever happens."""
    async with opened_stores(lambda **kwargs: new_store(pg_dsn, now, **kwargs)) as make:
        yield make
