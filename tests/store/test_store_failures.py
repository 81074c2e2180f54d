"""A database that is locked, full or refuses rows: nothing lost, nothing silent, nothing blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from store_contract.helpers import service_day, submit_all, wait_for
from structlog.testing import capture_logs

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store import SqliteStore

from .store_helpers import StoreFactory, count


async def test_locked_database_is_retried_and_nothing_is_lost(
    running: SqliteStore, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """While another process holds the write lock, batches stay in memory and are retried; then all land."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        submit_all(running, busy_hour)
        assert time.perf_counter() - started < 0.5, "submit must not wait on the database"
        await wait_for(lambda: running.stats.write_errors >= 2)
        stats = running.stats
        assert stats.retrying
        assert stats.last_error is not None and "locked" in stats.last_error
        assert stats.pending == 50
        assert stats.written == 0
        # Reads go on while the writer waits.
        assert (await running.get_call(busy_hour[0].call_id) or {}).get("call_id") == busy_hour[0].call_id
        other.execute("COMMIT")
    await wait_for(lambda: running.stats.written == 50)
    assert not running.stats.retrying
    assert running.stats.pending == 0
    assert count(db_path, "SELECT count(*) FROM calls") == 50


async def test_disk_full_is_retried_and_nothing_is_lost(
    running: SqliteStore, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """SQLITE_FULL keeps the batch and shows in stats; once there is room again, every call is written."""
    writer = running._writer  # the store's own connection: max_page_count is per connection
    assert writer is not None
    pages = next(iter(await writer.execute_fetchall("PRAGMA page_count")))[0]
    await writer.execute(f"PRAGMA max_page_count = {int(pages)}")
    submit_all(running, busy_hour)
    await wait_for(lambda: running.stats.write_errors >= 2)
    stats = running.stats
    assert stats.retrying
    assert stats.last_error is not None and "full" in stats.last_error
    assert stats.pending == 50
    await writer.execute("PRAGMA max_page_count = 1073741823")
    await wait_for(lambda: running.stats.written == 50)
    assert not running.stats.retrying
    assert count(db_path, "SELECT count(*) FROM calls") == 50


async def test_newer_submissions_win_over_a_failed_batch(
    running: SqliteStore, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """A call submitted again while its first batch is failing is written in its newest form, once."""
    record = busy_hour[0]
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        running.submit(record, service_day(record))
        await wait_for(lambda: running.stats.write_errors >= 1)
        newer = dataclasses.replace(record, recording="fixed.wav")
        running.submit(newer, service_day(newer))
        await wait_for(lambda: running.stats.write_errors >= 3)
        assert running.stats.pending == 1
        other.execute("COMMIT")
    await wait_for(lambda: running.stats.pending == 0)
    assert count(db_path, "SELECT count(*) FROM calls WHERE recording = ?", ("fixed.wav",)) == 1
    assert count(db_path, "SELECT count(*) FROM calls") == 1


async def test_a_row_the_database_refuses_does_not_block_the_others(
    store: SqliteStore, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """When the database rejects one call as invalid, the rest of its batch is written and the bad one logged."""
    bad = busy_hour[5]
    with closing(sqlite3.connect(db_path)) as other:
        quoted = bad.call_id.replace("'", "''")
        other.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.call_id = '{quoted}' "
            "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
        )
        other.commit()
    with capture_logs() as logs:
        submit_all(store, busy_hour)
        assert await store.flush(5.0)
    assert store.stats.rejected == 1
    assert store.stats.written == 49
    assert count(db_path, "SELECT count(*) FROM calls") == 49
    rejected = [e for e in logs if e["event"] == "write rejected by the database"]
    assert [e["call_ids"] for e in rejected] == [[bad.call_id]]


async def test_flush_gives_up_at_its_timeout(store: SqliteStore, busy_hour: list[CallRecord], db_path: Path) -> None:
    """flush() returns False when the lock outlasts its timeout, and keeps the calls for later."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        submit_all(store, busy_hour[:5])
        started = time.perf_counter()
        assert not await store.flush(0.3)
        assert time.perf_counter() - started < 2.0
        assert store.stats.pending == 5
        other.execute("COMMIT")
    assert await store.flush(5.0)
    assert count(db_path, "SELECT count(*) FROM calls") == 5


async def test_a_cancelled_flush_leaves_no_transaction_open(
    running: SqliteStore, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """Cancelling a task mid-write (here: a flush) leaves no transaction open on the connection."""
    submit_all(running, busy_hour)
    task = asyncio.create_task(running.flush(5.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    submit_all(running, busy_hour)
    await wait_for(lambda: running.stats.pending == 0 and running.stats.written >= 50)
    assert count(db_path, "SELECT count(*) FROM calls") == 50


async def test_close_always_closes_even_when_writes_cannot_finish(
    make_store: StoreFactory, busy_hour: list[CallRecord], db_path: Path
) -> None:
    """A lock that outlasts the close timeout still ends with the connections closed and the loss logged."""
    store = await make_store(flush_timeout_s=0.2)
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        submit_all(store, busy_hour[:3])
        with capture_logs() as logs:
            await store.close()
        other.execute("COMMIT")
    assert store._writer is None and store._reader is None  # no aiosqlite thread left to hang the exit
    lost = [e for e in logs if e["event"] == "store closed with writes not saved"]
    assert len(lost) == 1
    assert lost[0]["pending"] == 3
    assert lost[0]["call_ids"] == [r.call_id for r in busy_hour[:3]]
