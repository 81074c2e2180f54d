"""A server that kills connections, holds locks or refuses rows: nothing lost, nothing silent, nothing blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from store_contract.helpers import service_day, submit_all, wait_for
from structlog.testing import capture_logs

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store import CallFilter
from pbx_bridge.store.postgres import PostgresStore

from .pg_helpers import SITE, StoreFactory, count

pytestmark = pytest.mark.needs_postgres

APP = f"pbx-bridge {SITE}"  # the store's application_name


@pytest.fixture
async def other(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Another client of the database (another bridge, a DBA, a migration)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def writer_waiting_on_a_lock(conn: asyncpg.Connection) -> int:
    """The pid of the store's connection once it waits for a lock."""
    async with asyncio.timeout(5.0):
        while True:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", APP
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.01)


async def test_a_connection_killed_mid_write_is_retried_and_nothing_is_lost(
    make_store: StoreFactory, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """pg_terminate_backend on the writer in the middle of its transaction: the batch is kept and written again."""
    store = await make_store(lock_timeout_s=10.0)
    writer = asyncio.create_task(store.run())
    try:
        submit_all(store, busy_hour[:10])
        await wait_for(lambda: store.stats.written == 10)
        tx = other.transaction()
        await tx.start()
        await other.execute("LOCK TABLE calls IN SHARE MODE")  # the writer's upsert waits here
        submit_all(store, busy_hour[10:])
        pid = await writer_waiting_on_a_lock(other)
        killer = await asyncpg.connect(pg_dsn)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        await wait_for(lambda: store.stats.write_errors >= 1)
        stats = store.stats
        assert stats.retrying
        assert stats.last_error is not None and "terminat" in stats.last_error
        assert stats.pending == 40
        await tx.rollback()
        await wait_for(lambda: store.stats.written == 50)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    assert not store.stats.retrying
    assert store.stats.pending == 0
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 50
    assert (await store.list_calls(CallFilter()))[1] == 50


async def test_every_connection_killed_between_batches_is_replaced(
    running: PostgresStore, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """Killing all of the store's connections, again and again while calls come in, loses nothing; reads go on."""
    for chunk in range(5):
        submit_all(running, busy_hour[chunk * 10 : (chunk + 1) * 10])
        await other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", APP)
        await asyncio.sleep(0.03)
    await wait_for(lambda: running.stats.written >= 50 and running.stats.pending == 0)
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 50
    await other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", APP)
    assert (await running.list_calls(CallFilter()))[1] == 50  # the reader pool reconnects too


async def test_a_lock_timeout_is_retried_and_nothing_waits(
    running: PostgresStore, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """While another client holds a lock, batches stay in memory and are retried; reads and the loop go on."""
    tx = other.transaction()
    await tx.start()
    await other.execute("LOCK TABLE calls IN SHARE MODE")
    started = time.perf_counter()
    submit_all(running, busy_hour)
    assert time.perf_counter() - started < 0.5, "submit must not wait on the database"
    lags: list[float] = []
    for _ in range(20):  # the event loop keeps its pace while the writer fails and retries
        tick = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - tick - 0.01)
    await wait_for(lambda: running.stats.write_errors >= 2)
    assert max(lags) < 0.2
    stats = running.stats
    assert stats.retrying
    assert stats.last_error is not None and "lock timeout" in stats.last_error
    assert stats.pending == 50
    assert stats.written == 0
    # Reads go on while the writer waits (a pending call is served from memory).
    assert (await running.get_call(busy_hour[0].call_id) or {}).get("call_id") == busy_hour[0].call_id
    assert await running.list_calls(CallFilter()) == ([], 0)
    await tx.rollback()
    await wait_for(lambda: running.stats.written == 50)
    assert not running.stats.retrying
    assert running.stats.pending == 0
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 50


async def test_newer_submissions_win_over_a_failed_batch(
    running: PostgresStore, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """A call submitted again while its first batch is failing is written in its newest form, once."""
    record = busy_hour[0]
    tx = other.transaction()
    await tx.start()
    await other.execute("LOCK TABLE calls IN SHARE MODE")
    running.submit(record, service_day(record))
    await wait_for(lambda: running.stats.write_errors >= 1)
    newer = dataclasses.replace(record, recording="fixed.wav")
    running.submit(newer, service_day(newer))
    await wait_for(lambda: running.stats.write_errors >= 3)
    assert running.stats.pending == 1
    await tx.rollback()
    await wait_for(lambda: running.stats.pending == 0)
    assert await count(pg_dsn, "SELECT count(*) FROM calls WHERE recording = $1", "fixed.wav") == 1
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 1


async def test_rows_the_database_refuses_do_not_block_the_others(
    store: PostgresStore, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """A trigger's RAISE on one call and a value PostgreSQL cannot hold in another: the rest is written, both logged."""
    refused = busy_hour[5]
    await other.execute("CREATE TABLE refused (call_id text)")
    await other.execute("INSERT INTO refused VALUES ($1)", refused.call_id)
    await other.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM refused r WHERE r.call_id = NEW.call_id) THEN
                RAISE EXCEPTION 'refused for the test';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    await other.execute("CREATE TRIGGER refuse BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION refuse()")
    too_big = dataclasses.replace(busy_hour[6], rings=2**40)  # rings is an INTEGER column
    with capture_logs() as logs:
        submit_all(store, [*busy_hour[:6], too_big, *busy_hour[7:]])
        assert await store.flush(5.0)
    assert store.stats.rejected == 2
    assert store.stats.written == 48
    assert store.stats.write_errors == 0
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 48
    rejected = [e for e in logs if e["event"] == "write rejected by the database"]
    assert sorted(e["call_ids"][0] for e in rejected) == sorted([refused.call_id, too_big.call_id])


async def test_flush_gives_up_at_its_timeout(
    store: PostgresStore, busy_hour: list[CallRecord], other: asyncpg.Connection, pg_dsn: str
) -> None:
    """flush() returns False when the lock outlasts its timeout, and keeps the calls for later."""
    tx = other.transaction()
    await tx.start()
    await other.execute("LOCK TABLE calls IN SHARE MODE")
    submit_all(store, busy_hour[:5])
    started = time.perf_counter()
    assert not await store.flush(0.3)
    assert time.perf_counter() - started < 2.0
    assert store.stats.pending == 5
    await tx.rollback()
    assert await store.flush(5.0)
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 5


async def test_a_cancelled_flush_leaves_no_transaction_open(
    running: PostgresStore, busy_hour: list[CallRecord], pg_dsn: str
) -> None:
    """Cancelling a task mid-write (here: a flush) leaves no transaction open on the connection."""
    submit_all(running, busy_hour)
    task = asyncio.create_task(running.flush(5.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    submit_all(running, busy_hour)
    await wait_for(lambda: running.stats.pending == 0 and running.stats.written >= 50)
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 50
    idle_in_tx = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in%'"
    assert await count(pg_dsn, idle_in_tx, APP) == 0


async def test_close_always_closes_even_when_writes_cannot_finish(
    make_store: StoreFactory, busy_hour: list[CallRecord], other: asyncpg.Connection
) -> None:
    """A lock that outlasts the close timeout still ends with the connections closed and the loss logged."""
    store = await make_store(flush_timeout_s=0.2)
    tx = other.transaction()
    await tx.start()
    await other.execute("LOCK TABLE calls IN SHARE MODE")
    submit_all(store, busy_hour[:3])
    with capture_logs() as logs:
        await store.close()
    await tx.rollback()
    assert store._writer is None and store._pool is None
    assert await count_connections(other) == 0
    lost = [e for e in logs if e["event"] == "store closed with writes not saved"]
    assert len(lost) == 1
    assert lost[0]["pending"] == 3
    assert lost[0]["call_ids"] == [r.call_id for r in busy_hour[:3]]


async def count_connections(conn: asyncpg.Connection) -> int:
    """The store's connections the server still has, once closing ones are gone."""
    async with asyncio.timeout(5.0):
        while True:
            n = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP))
            if n == 0:
                return 0
            await asyncio.sleep(0.01)
