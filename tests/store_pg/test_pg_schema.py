"""The versioned PostgreSQL schema: created from nothing, upgraded forward, never downgraded, upgraded once."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

import asyncpg
import pytest

from pbx_bridge.errors import StoreError
from pbx_bridge.store import schema as sqlite_schema
from pbx_bridge.store.pg_schema import LATEST_VERSION, MIGRATIONS, Migration, apply_migrations
from pbx_bridge.store.postgres import PostgresStore

from .pg_helpers import FAST, StoreFactory, count, fetch

pytestmark = pytest.mark.needs_postgres

TABLES = {
    "schema_version",
    "calls",
    "holds",
    "transfers",
    "ring_no_answer",
    "violations",
    "complaints",
    "agent_states",
    "open_calls",
}


async def names(dsn: str, kind: str) -> set[str]:
    rows = await fetch(
        dsn,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = $1::text::\"char\"",
        kind,
    )
    return {r["relname"] for r in rows}


async def columns(dsn: str, table: str) -> list[str]:
    rows = await fetch(
        dsn,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1"
        " ORDER BY ordinal_position",
        table,
    )
    return [r["column_name"] for r in rows]


async def test_empty_database_gets_every_table_and_index(make_store: StoreFactory, pg_dsn: str) -> None:
    """Opening an empty database creates every table and the QA indexes, at the latest version."""
    await make_store()
    assert await names(pg_dsn, "r") == TABLES
    assert {
        "calls_arrived",
        "calls_agent",
        "calls_queue",
        "calls_caller",
        "calls_outcome",
        "calls_service_day",
        "violations_rule",
        "complaints_agent",
        "agent_states_start",
    } <= await names(pg_dsn, "i")
    assert await count(pg_dsn, "SELECT MAX(version) FROM schema_version") == LATEST_VERSION


async def test_same_columns_as_the_sqlite_schema_plus_site(make_store: StoreFactory, pg_dsn: str) -> None:
    """Each table has SQLite's columns, in SQLite's order, after a leading ``site`` (ids stay first)."""
    await make_store()
    with closing(sqlite3.connect(":memory:")) as db:
        for statement in sqlite_schema.MIGRATIONS[0].statements:
            db.execute(statement)
        for table in TABLES - {"schema_version"}:
            lite = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            pg = await columns(pg_dsn, table)
            if lite[0] == "id":
                assert pg == ["id", "site", *lite[1:]], table
            else:
                assert pg == ["site", *lite], table
    assert len(MIGRATIONS) == len(sqlite_schema.MIGRATIONS), "the two schemas move in step"


async def test_times_are_double_precision_and_text_sorts_by_code_point(make_store: StoreFactory, pg_dsn: str) -> None:
    """No 4-byte REAL anywhere; text columns use the "C" collation (SQLite's binary order, index-friendly prefixes)."""
    await make_store()
    rows = await fetch(
        pg_dsn,
        "SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name <> 'schema_version'",
    )
    assert not [r for r in rows if r["data_type"] == "real"]
    keys = {(r["table_name"], r["column_name"]): r["collation_name"] for r in rows if r["data_type"] == "text"}
    for key in (("calls", "call_id"), ("calls", "caller"), ("calls", "site"), ("agent_states", "agent")):
        assert keys[key] == "C", key


async def test_reopening_applies_nothing_twice(make_store: StoreFactory, pg_dsn: str) -> None:
    """A second open of an up-to-date database leaves schema_version as it was."""
    first = await make_store()
    await first.close()
    await make_store()
    assert await count(pg_dsn, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


async def test_bridges_starting_together_upgrade_once(fresh_dsn: str, now: float) -> None:
    """Several sites opening one empty database at the same moment: one creates the schema, none fails."""
    stores = [PostgresStore(fresh_dsn, site=f"site{i}", **FAST, clock=lambda: now) for i in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
    finally:
        for store in stores:
            await store.close()
    assert await count(fresh_dsn, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


async def test_newer_schema_is_refused_with_a_clear_error(make_store: StoreFactory, pg_dsn: str) -> None:
    """A database written by a newer pbx-bridge is not opened, and the error says why and where."""
    first = await make_store()
    await first.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO schema_version VALUES ($1, $2, $3)", LATEST_VERSION + 1, "from the future", 0.0)
    finally:
        await conn.close()
    with pytest.raises(StoreError, match=r"schema version \d+, newer than this pbx-bridge knows") as info:
        await make_store()
    assert "(site north)" in str(info.value)
    assert await count(pg_dsn, "SELECT MAX(version) FROM schema_version") == LATEST_VERSION + 1


async def test_forward_migration_from_an_older_version(pg_dsn: str) -> None:
    """Steps the database lacks are applied in order, and only those."""
    v1 = (Migration(1, "one table", ("CREATE TABLE a (x INTEGER)",)),)
    v2 = (*v1, Migration(2, "a column and a table", ("ALTER TABLE a ADD COLUMN y TEXT", "CREATE TABLE b (z TEXT)")))
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await apply_migrations(conn, lambda: 1.0, v1) == 1
        await conn.execute("INSERT INTO a (x) VALUES ($1)", 7)
        assert await apply_migrations(conn, lambda: 2.0, v2) == 2
        rows = [tuple(r) for r in await conn.fetch("SELECT x, y FROM a")]
        versions = [tuple(r) for r in await conn.fetch("SELECT version, applied_at FROM schema_version ORDER BY 1")]
    finally:
        await conn.close()
    assert rows == [(7, None)]
    assert versions == [(1, 1.0), (2, 2.0)]


async def test_a_failed_step_leaves_the_database_unchanged(pg_dsn: str) -> None:
    """A migration that fails half-way is rolled back whole (DDL included): version and tables as before."""
    v1 = (Migration(1, "one table", ("CREATE TABLE a (x INTEGER)",)),)
    broken = (*v1, Migration(2, "broken", ("CREATE TABLE b (z TEXT)", "THIS IS NOT SQL")))
    conn = await asyncpg.connect(pg_dsn)
    try:
        await apply_migrations(conn, lambda: 1.0, v1)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await apply_migrations(conn, lambda: 2.0, broken)
        assert not conn.is_in_transaction()
    finally:
        await conn.close()
    assert await names(pg_dsn, "r") == {"a", "schema_version"}
    assert await count(pg_dsn, "SELECT MAX(version) FROM schema_version") == 1


async def test_a_database_that_cannot_be_reached_is_refused(pg_dsn: str) -> None:
    """A wrong database name gives a StoreError at open, and the store can still be closed."""
    store = PostgresStore(pg_dsn.rsplit("/", 1)[0] + "/no_such_database", site="north", connect_timeout_s=2.0)
    with pytest.raises(StoreError, match="cannot open the call store"):
        await store.open()
    await store.close()
