"""Pytest plugin (listed in tests/conftest.py): a PostgreSQL cluster for the session, a database per test.

Loaded from the top conftest so every folder that needs a server (tests/store_pg, and the
``postgres`` cases of tests/store_contract) shares the one cluster of the session.
Without PostgreSQL's server binaries a developer's run skips these tests with the install hint;
under CI (``CI=true``) it fails them: there a missing server is a broken setup.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from .pg_cluster import Cluster, ClusterUnavailable, start_cluster, unavailable

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
    import asyncpg  # here, not at the top: every test session loads this plugin, most need no asyncpg

    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return cluster.dsn(name)


@pytest.fixture
async def pg_dsn(shared_database: str) -> str:
    """An empty database for the test: every table, trigger and function of the last test dropped."""
    import asyncpg

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
