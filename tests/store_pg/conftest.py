"""Fixtures of the PostgreSQL store tests: a cluster started for the session, a database per test.

Without PostgreSQL's server binaries a developer's run skips these tests with the install hint;
under CI (``CI=true``) it fails them: there a missing server is a broken setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from pg_cluster import Cluster, ClusterUnavailable, start_cluster, unavailable
from pg_helpers import FAST, SITE, StoreFactory, replay_capture

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store.postgres import PostgresStore

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server on 127.0.0.1 for the whole session, stopped (and its dir removed) at the end."""
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_database(pg_cluster: Cluster) -> str:
    """The database most tests use, emptied before each of them (creating one per test is slower)."""
    return asyncio.run(create_database(pg_cluster, "shared"))


async def create_database(cluster: Cluster, name: str) -> str:
    """Create database ``name`` (a constant or a counter: never input); return its DSN."""
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return cluster.dsn(name)


@pytest.fixture
async def pg_dsn(shared_database: str) -> str:
    """An empty database for the test: every table, trigger and function of the last test dropped."""
    conn = await asyncpg.connect(shared_database)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return shared_database


@pytest.fixture
async def fresh_dsn(pg_cluster: Cluster) -> str:
    """A new database of its own, for tests that open it from two places or watch it from outside."""
    return await create_database(pg_cluster, f"t{next(_databases)}")


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
async def make_store(pg_dsn: str, now: float) -> AsyncIterator[StoreFactory]:
    """``await make_store(**kwargs)``: an open store (site "north" unless told), closed at the end whatever happens."""
    stores: list[PostgresStore] = []

    async def make(**kwargs: Any) -> PostgresStore:
        options: dict[str, Any] = {**FAST, "clock": lambda: now, "site": SITE, **kwargs}
        store = PostgresStore(options.pop("dsn", pg_dsn), **options)
        stores.append(store)
        await store.open()
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> PostgresStore:
    """An open store with test timings (no writer task running)."""
    return await make_store()


@pytest.fixture
async def running(store: PostgresStore) -> AsyncIterator[PostgresStore]:
    """An open store with its writer task running."""
    task = asyncio.create_task(store.run())
    try:
        yield store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
