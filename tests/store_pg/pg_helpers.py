"""Helpers of the PostgreSQL store tests: test timings, opening a store, reading the database from outside.

What every backend shares (replaying captures, submitting, waiting) is in :mod:`store_contract.helpers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pbx_bridge.store.postgres import PostgresStore

# Tests run fast: short batches and lock waits, and a back-off that never grows past 0.2 s.
FAST: dict[str, Any] = {
    "batch_interval_s": 0.02,
    "lock_timeout_s": 0.05,
    "max_backoff_s": 0.2,
    "flush_timeout_s": 5.0,
    "connect_timeout_s": 5.0,
}
SITE = "north"

StoreFactory = Callable[..., Awaitable[PostgresStore]]
"""``await make_store(**kwargs)``: the ``make_store`` fixture."""


def new_store(dsn: str, now: float, **kwargs: Any) -> PostgresStore:
    """A store (not opened) on ``dsn`` (or ``dsn=``), site "north" unless told, test timings, clock at ``now``."""
    options: dict[str, Any] = {**FAST, "clock": lambda: now, "site": SITE, **kwargs}
    return PostgresStore(options.pop("dsn", dsn), **options)


async def fetch(dsn: str, sql: str, *params: object) -> list[asyncpg.Record]:
    """Rows of a query on a connection of its own (what another client sees)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


async def count(dsn: str, sql: str, *params: object) -> int:
    """One integer from a query on a connection of its own."""
    rows = await fetch(dsn, sql, *params)
    return int(rows[0][0])
