"""Fixtures of the call-store contract: every test that asks for a store runs once per backend.

``backend`` is "sqlite" (a file in the test's tmp dir) or "postgres" (the emptied shared database
of :mod:`store_pg.pg_fixtures`, site "north"). The ``postgres`` cases ask for the cluster only when
they run, so they skip locally without PostgreSQL's server binaries and fail under ``CI=true``
(``pg_cluster.unavailable``), exactly as tests/store_pg does; the ``sqlite`` cases never need it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .backends import Database, PostgresDatabase, SqliteDatabase, StoreFactory
from .helpers import opened_stores

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.needs_postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend the test runs against: "sqlite" or "postgres"."""
    name: str = request.param
    return name


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The test's own empty database on that backend (the PostgreSQL one starts the cluster if need be)."""
    if backend == "sqlite":
        return SqliteDatabase(tmp_path / "data" / "calls.sqlite3")
    return PostgresDatabase(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def make_store(database: Database, now: float) -> AsyncIterator[StoreFactory]:
    """``await make_store(**kwargs)``: an open store on the test's database, closed at the end whatever happens."""
    async with opened_stores(lambda **kwargs: database.new_store(now, **kwargs)) as make:
        yield make
