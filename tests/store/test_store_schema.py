"""The versioned schema: created from nothing, upgraded forward, never downgraded."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import aiosqlite
import pytest

from pbx_bridge.errors import StoreError
from pbx_bridge.store import SqliteStore
from pbx_bridge.store.schema import LATEST_VERSION, MIGRATIONS, Migration, apply_migrations, check_migrations

from .store_helpers import StoreFactory, count

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


def _names(path: Path, kind: str) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))}


async def test_empty_database_gets_every_table_and_index(make_store: StoreFactory, db_path: Path) -> None:
    """Opening a missing file creates it, its directory, every table and the QA indexes."""
    await make_store()
    assert _names(db_path, "table") >= TABLES
    assert {
        "calls_arrived",
        "calls_agent",
        "calls_queue",
        "calls_caller",
        "calls_outcome",
        "calls_service_day",
        "violations_rule",
    } <= _names(db_path, "index")
    assert count(db_path, "SELECT MAX(version) FROM schema_version") == LATEST_VERSION


async def test_database_is_in_wal_mode(make_store: StoreFactory, db_path: Path) -> None:
    """The file is switched to WAL, so readers never wait on the writer."""
    await make_store()
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_reopening_applies_nothing_twice(make_store: StoreFactory, db_path: Path) -> None:
    """A second open of an up-to-date file leaves schema_version as it was."""
    first = await make_store()
    await first.close()
    await make_store()
    assert count(db_path, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


async def test_newer_schema_is_refused_with_a_clear_error(make_store: StoreFactory, db_path: Path) -> None:
    """A database written by a newer pbx-bridge is not opened, and the error says why."""
    first = await make_store()
    await first.close()
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (LATEST_VERSION + 1, "from the future", 0.0))
        db.commit()
    with pytest.raises(StoreError, match=r"schema version \d+, newer than this pbx-bridge knows") as info:
        await make_store()
    assert str(db_path) in str(info.value)
    assert count(db_path, "SELECT MAX(version) FROM schema_version") == LATEST_VERSION + 1


@pytest.fixture
def garbage(db_path: Path) -> Path:
    """A file at the store path that is not SQLite."""
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not SQLite" * 100)
    return db_path


async def test_a_file_that_is_not_a_database_is_refused(garbage: Path) -> None:
    """Garbage at the store path gives a StoreError, not a hung connection."""
    store = SqliteStore(garbage)
    with pytest.raises(StoreError, match="cannot open the call store"):
        await store.open()
    await store.close()


async def test_forward_migration_from_an_older_version(tmp_path: Path) -> None:
    """Steps the database lacks are applied in order, and only those."""
    path = tmp_path / "m.sqlite3"
    v1 = (Migration(1, "one table", ("CREATE TABLE a (x INTEGER)",)),)
    v2 = (*v1, Migration(2, "a column and a table", ("ALTER TABLE a ADD COLUMN y TEXT", "CREATE TABLE b (z)")))
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await apply_migrations(db, lambda: 1.0, v1) == 1
        await db.execute("INSERT INTO a (x) VALUES (?)", (7,))
        assert await apply_migrations(db, lambda: 2.0, v2) == 2
        rows = list(await db.execute_fetchall("SELECT x, y FROM a"))
        versions = list(await db.execute_fetchall("SELECT version, applied_at FROM schema_version ORDER BY version"))
    assert [tuple(r) for r in rows] == [(7, None)]
    assert [tuple(r) for r in versions] == [(1, 1.0), (2, 2.0)]


async def test_a_failed_step_leaves_the_database_unchanged(tmp_path: Path) -> None:
    """A migration that fails half-way is rolled back whole: version and tables as before."""
    path = tmp_path / "m.sqlite3"
    v1 = (Migration(1, "one table", ("CREATE TABLE a (x INTEGER)",)),)
    broken = (*v1, Migration(2, "broken", ("CREATE TABLE b (z)", "THIS IS NOT SQL")))
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await apply_migrations(db, lambda: 1.0, v1)
        with pytest.raises(sqlite3.OperationalError):
            await apply_migrations(db, lambda: 2.0, broken)
        assert not db.in_transaction
    assert _names(path, "table") == {"a", "schema_version"}
    assert count(path, "SELECT MAX(version) FROM schema_version") == 1


def test_migrations_are_numbered_without_gaps() -> None:
    """The real list is 1, 2, 3, ...; a gap or a repeat is a programming error."""
    check_migrations(MIGRATIONS)
    with pytest.raises(ValueError, match="should be version 2"):
        check_migrations([Migration(1, "a", ()), Migration(3, "c", ())])
    with pytest.raises(ValueError, match="no migrations"):
        check_migrations([])
