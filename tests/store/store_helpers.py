"""Helpers of the SQLite store tests: test timings, opening a store, reading the database from outside.

What every backend shares (replaying captures, submitting, waiting) is in :mod:`store_contract.helpers`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from pbx_bridge.store import SqliteStore

# Tests run fast: short batches and lock waits, and a back-off that never grows past 0.2 s.
FAST: dict[str, Any] = {"batch_interval_s": 0.02, "busy_timeout_s": 0.05, "max_backoff_s": 0.2, "flush_timeout_s": 5.0}

StoreFactory = Callable[..., Awaitable[SqliteStore]]
"""``await make_store(**kwargs)``: the ``make_store`` fixture."""


def new_store(path: Path, now: float, **kwargs: Any) -> SqliteStore:
    """A store (not opened) at ``path`` (or ``path=``) with the test timings and a clock stopped at ``now``."""
    options: dict[str, Any] = {**FAST, "clock": lambda: now, **kwargs}
    return SqliteStore(options.pop("path", path), **options)


def count(path: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    """One integer from a query on a separate sqlite3 connection (what another process sees)."""
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(sql, params).fetchone()[0])


def fetch(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a query, as dicts, on a separate sqlite3 connection."""
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]
