"""Each call-store backend as the contract's tests see it: a store to open, and its database from outside.

A :class:`Database` makes stores (with the backend's test timings) on the test's own database, and
reads that database as another client would: whole tables (the store's own site on PostgreSQL) and
row counts (every site). The contract's tests use nothing else, so each one runs unchanged on both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from store import store_helpers as sqlite
from store_pg import pg_helpers as pg

from pbx_bridge.store import SqliteStore
from pbx_bridge.store.postgres import PostgresStore

Store = SqliteStore | PostgresStore

StoreFactory = Callable[..., Awaitable[Store]]
"""``await make_store(**kwargs)``: the ``make_store`` fixture of tests/store_contract."""


class Database(Protocol):
    """The test's database: where its stores write, and what another client reads there."""

    def new_store(self, now: float, **kwargs: Any) -> Store:
        """A store (not opened) on this database, with test timings and a clock stopped at ``now``."""
        ...

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``table`` written by the test's store (on PostgreSQL: those of its site)."""
        ...

    async def count(self, table: str) -> int:
        """How many rows ``table`` holds (on PostgreSQL: of every site)."""
        ...


class SqliteDatabase:
    """A SQLite file of the test's own, read on separate sqlite3 connections."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def new_store(self, now: float, **kwargs: Any) -> Store:
        return sqlite.new_store(self.path, now, **kwargs)

    async def rows(self, table: str) -> list[dict[str, Any]]:
        return sqlite.fetch(self.path, f"SELECT * FROM {table}")

    async def count(self, table: str) -> int:
        return sqlite.count(self.path, f"SELECT count(*) FROM {table}")


class PostgresDatabase:
    """An empty PostgreSQL database for the test; its stores write as site :data:`pg_helpers.SITE`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def new_store(self, now: float, **kwargs: Any) -> Store:
        return pg.new_store(self.dsn, now, **kwargs)

    async def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(row) for row in await pg.fetch(self.dsn, f"SELECT * FROM {table} WHERE site = $1", pg.SITE)]

    async def count(self, table: str) -> int:
        return await pg.count(self.dsn, f"SELECT count(*) FROM {table}")
