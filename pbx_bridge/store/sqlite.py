"""The SQLite call store: batched, retrying writes from one task; QA reads beside them.

Theory of operation: the engine's consumer calls :meth:`SqliteStore.submit` (and the open-call
and agent-state methods) for every finished call. Those only turn the record into rows and put
them in an in-memory pending batch, keyed by call id so a repeated call replaces itself; they
never touch the database, so the event stream never waits on the disk. :meth:`SqliteStore.run`
is the one writer: every ``batch_interval_s`` it takes the whole batch and writes it in one
transaction (upserts, then the call's child rows deleted and inserted again, so a replayed call
leaves exactly one copy). When SQLite says the file is locked or the disk is full, the batch
goes back into memory under anything newer and is retried with a capped back-off; ``stats``
shows the errors. Only when the database refuses rows as invalid are they written one by one,
and those it refuses are logged and counted (one bad call does not block the others).

aiosqlite runs every statement in a thread of its own. Each write runs as a task holding the
write lock, awaited through :func:`asyncio.shield`: a cancelled caller never leaves a
transaction half done on the connection. Reads use a second, read-only connection, so a QA
query never queues behind a write waiting on a lock (WAL lets readers and the writer run
together).

An open aiosqlite connection keeps its (non-daemon) thread alive and the process from exiting:
:meth:`SqliteStore.close` closes both connections whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiosqlite
import structlog

from pbx_bridge.engine.model import CallRecord, Direction, Outcome, secs
from pbx_bridge.errors import StoreError
from pbx_bridge.store.model import (
    AgentStateInterval,
    CallFilter,
    Complaint,
    OpenMarker,
    StoreStats,
    UnansweredCall,
    check_service_day,
)
from pbx_bridge.store.schema import apply_migrations

_T = TypeVar("_T")

DAY_S: Final = 86_400.0
PURGE_RETRY_S: Final = 600.0  # after a failed purge; a day is too long to wait
_LOG_IDS: Final = 20  # a log line names this many ids of a batch, not 100 000
# Errors that say the rows themselves are bad: anything else (locked, disk full, I/O) is about
# the database, and the rows are kept for a retry rather than thrown away.
_ROW_ERRORS: Final = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)

_UPSERT_CALL: Final = """
    INSERT INTO calls (
        call_id, direction, caller, caller_name, callee, queue, agent, agent_name,
        arrived_at, offered_at, answered_at, ended_at, time_to_answer_s, rings, outcome,
        abandoned_after_s, talk_s, hold_count, hold_total_s, hold_max_s, hangup_by, after_hours,
        recording, partial, picked_up_by, service_day, record_json, stored_at
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (call_id) DO UPDATE SET
        direction = excluded.direction, caller = excluded.caller, caller_name = excluded.caller_name,
        callee = excluded.callee, queue = excluded.queue, agent = excluded.agent,
        agent_name = excluded.agent_name, arrived_at = excluded.arrived_at,
        offered_at = excluded.offered_at, answered_at = excluded.answered_at,
        ended_at = excluded.ended_at, time_to_answer_s = excluded.time_to_answer_s,
        rings = excluded.rings, outcome = excluded.outcome,
        abandoned_after_s = excluded.abandoned_after_s, talk_s = excluded.talk_s,
        hold_count = excluded.hold_count, hold_total_s = excluded.hold_total_s,
        hold_max_s = excluded.hold_max_s, hangup_by = excluded.hangup_by,
        after_hours = excluded.after_hours, recording = excluded.recording,
        partial = excluded.partial, picked_up_by = excluded.picked_up_by,
        service_day = excluded.service_day, record_json = excluded.record_json,
        stored_at = excluded.stored_at
"""
_DELETE_CHILDREN: Final = (
    "DELETE FROM holds WHERE call_id = ?",
    "DELETE FROM transfers WHERE call_id = ?",
    "DELETE FROM ring_no_answer WHERE call_id = ?",
    "DELETE FROM violations WHERE call_id = ?",
)
_INSERT_HOLD: Final = """
    INSERT INTO holds (call_id, seq, start, end, seconds, ended_call_on_hold, consult)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_TRANSFER: Final = """
    INSERT INTO transfers (call_id, seq, kind, from_agent, to_target, at, target_answered,
        confirmed_before_leave, target_answered_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_RNA: Final = "INSERT INTO ring_no_answer (call_id, seq, agent, ring_s, at) VALUES (?, ?, ?, ?, ?)"
_INSERT_VIOLATION: Final = "INSERT INTO violations (call_id, rule, kind, queue, agent, at) VALUES (?, ?, ?, ?, ?, ?)"
_UPSERT_MARKER: Final = """
    INSERT INTO open_calls (call_id, arrived_at, last_seen, payload) VALUES (?, ?, ?, ?)
    ON CONFLICT (call_id) DO UPDATE SET
        arrived_at = excluded.arrived_at, last_seen = excluded.last_seen, payload = excluded.payload
"""
_DELETE_MARKER: Final = "DELETE FROM open_calls WHERE call_id = ?"
_UPSERT_STATE: Final = """
    INSERT INTO agent_states (agent, queue, state, reason, start, end) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (agent, queue, start) DO UPDATE SET
        state = excluded.state, reason = excluded.reason, end = excluded.end
"""
_PURGE: Final = (
    "DELETE FROM holds WHERE call_id IN (SELECT call_id FROM calls WHERE arrived_at < ?)",
    "DELETE FROM transfers WHERE call_id IN (SELECT call_id FROM calls WHERE arrived_at < ?)",
    "DELETE FROM ring_no_answer WHERE call_id IN (SELECT call_id FROM calls WHERE arrived_at < ?)",
    "DELETE FROM violations WHERE call_id IN (SELECT call_id FROM calls WHERE arrived_at < ?)",
    "DELETE FROM complaints WHERE call_id IN (SELECT call_id FROM calls WHERE arrived_at < ?)",
    "DELETE FROM agent_states WHERE COALESCE(end, start) < ?",
    "DELETE FROM open_calls WHERE last_seen < ?",
)
_PURGE_CALLS: Final = "DELETE FROM calls WHERE arrived_at < ?"

# CallFilter → WHERE fragments. Only these constant strings are ever joined into SQL; every value
# travels as a parameter.
_RULE_MATCH: Final = "call_id IN (SELECT v.call_id FROM violations v WHERE v.rule = ?)"
_HAS_TRANSFER: Final = "EXISTS (SELECT 1 FROM transfers t WHERE t.call_id = calls.call_id)"
_NO_TRANSFER: Final = "NOT EXISTS (SELECT 1 FROM transfers t WHERE t.call_id = calls.call_id)"
_LIST_CALLS: Final = "SELECT record_json FROM calls"
_COUNT_CALLS: Final = "SELECT count(*) AS total FROM calls"
_LIST_ORDER: Final = " ORDER BY arrived_at DESC, call_id DESC LIMIT ? OFFSET ?"


@dataclass(frozen=True, slots=True)
class _CallRows:
    """One call as rows, built when it is submitted (the batch never holds live objects)."""

    call_id: str
    agent: str | None
    record_json: str
    call: tuple[object, ...]
    holds: tuple[tuple[object, ...], ...]
    transfers: tuple[tuple[object, ...], ...]
    rna: tuple[tuple[object, ...], ...]
    violations: tuple[tuple[object, ...], ...]


@dataclass(frozen=True, slots=True)
class _MarkerRow:
    call_id: str
    arrived_at: float
    last_seen: float
    payload_json: str


_StateKey = tuple[str, str, float]


@dataclass(slots=True)
class _Batch:
    """Writes waiting for the writer. A marker of None means "closed"."""

    calls: dict[str, _CallRows] = field(default_factory=dict)
    markers: dict[str, _MarkerRow | None] = field(default_factory=dict)
    states: dict[_StateKey, AgentStateInterval] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls) + len(self.markers) + len(self.states)

    def under(self, newer: _Batch) -> _Batch:
        """This batch with ``newer`` laid over it: for the same key, the newer write wins."""
        return _Batch(
            calls={**self.calls, **newer.calls},
            markers={**self.markers, **newer.markers},
            states={**self.states, **newer.states},
        )

    def items(self) -> Iterable[_Batch]:
        """Each write as a batch of its own."""
        for call_id, rows in self.calls.items():
            yield _Batch(calls={call_id: rows})
        for call_id, marker in self.markers.items():
            yield _Batch(markers={call_id: marker})
        for key, state in self.states.items():
            yield _Batch(states={key: state})

    def describe(self) -> dict[str, object]:
        """What is in the batch, for a log line (ids of the first few of each kind)."""
        return {
            "call_ids": list(islice(self.calls, _LOG_IDS)),
            "markers": list(islice(self.markers, _LOG_IDS)),
            "agent_states": [f"{agent}/{queue}@{start}" for agent, queue, start in islice(self.states, _LOG_IDS)],
            "counts": {"calls": len(self.calls), "markers": len(self.markers), "agent_states": len(self.states)},
        }


@dataclass(slots=True)
class _Counters:
    written: int = 0
    dropped: int = 0
    rejected: int = 0
    write_errors: int = 0
    retrying: bool = False
    last_error: str | None = None
    batches: int = 0
    purged: int = 0


class SqliteStore:
    """Call records, QA tags and floor history in one SQLite file.

    Args:
        path: the database file (created, with its directory, if missing).
        batch_interval_s: how often the writer commits what is pending.
        max_pending: most writes held in memory; beyond it new ones are dropped, counted
            and logged.
        retention_days: calls that arrived longer ago are purged (at open, then daily).
        busy_timeout_s: how long SQLite waits for another process's lock before a write
            fails and is retried.
        max_backoff_s: the longest wait between retries of a failing write.
        flush_timeout_s: how long closing, or cancelling :meth:`run`, keeps writing.
        clock: wall clock (epoch seconds) for retention and bookkeeping times.
    """

    def __init__(
        self,
        path: Path,
        batch_interval_s: float = 0.5,
        max_pending: int = 100_000,
        retention_days: int = 365,
        *,
        busy_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        flush_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("batch_interval_s", batch_interval_s),
            ("max_pending", max_pending),
            ("retention_days", retention_days),
            ("max_backoff_s", max_backoff_s),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if busy_timeout_s < 0 or flush_timeout_s < 0:
            raise ValueError("busy_timeout_s and flush_timeout_s must not be negative")
        self.path = path
        self.batch_interval_s = batch_interval_s
        self.max_pending = max_pending
        self.retention_days = retention_days
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._max_backoff_s = max(max_backoff_s, batch_interval_s)
        self._flush_timeout_s = flush_timeout_s
        self._clock = clock
        self._log = structlog.get_logger("pbx_bridge.store").bind(store=str(path))
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._closed = False
        self._running = False
        self._pending = _Batch()
        self._inflight: _Batch | None = None
        self._lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[Any]] = set()
        self._counters = _Counters()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or upgrading) the database, then purge expired calls.

        Raises:
            StoreError: the file cannot be opened, is not a database, or has a schema newer
                than this code knows.
        """
        if self._closed:
            raise StoreError(f"{self.path}: the store was closed; make a new one")
        if self._writer is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the directory: {exc.strerror}") from exc
        try:
            self._writer = await self._connect(query_only=False)
            await apply_migrations(self._writer, self._clock)
            self._reader = await self._connect(query_only=True)
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, StoreError):
                raise StoreError(f"{self.path}: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot open the call store: {exc}") from exc
            raise
        self._log.info("store opened")
        try:
            await self.purge(self._clock())
        except StoreError as exc:
            # Retention can wait for the writer's next purge; the calls coming in cannot.
            self._log.warning("retention purge at open failed", error=str(exc))

    async def _connect(self, *, query_only: bool) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions; the store says BEGIN and COMMIT itself.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")  # an int, not input
            if query_only:
                await db.execute("PRAGMA query_only = ON")
                db.row_factory = sqlite3.Row
            else:
                rows = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
                if str(rows[0][0]).lower() != "wal":
                    self._log.warning("WAL journal not available; readers will wait on writes", mode=rows[0][0])
                await db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        """Write what is pending (up to ``flush_timeout_s``), then close the database. Always closes."""
        if self._closed:
            return
        try:
            if self._writer is not None and (self._pending or self._jobs):
                await self.flush(self._flush_timeout_s)
        finally:
            self._closed = True
            if self._jobs:
                # A write mid-transaction must end before its connection does.
                await asyncio.wait(set(self._jobs))
            await self._close_connections()
            if self._pending:
                self._log.error(
                    "store closed with writes not saved",
                    pending=len(self._pending),
                    last_error=self._counters.last_error,
                    **self._pending.describe(),
                )
            else:
                self._log.info("store closed")

    async def _close_connections(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        try:
            if reader is not None:
                await reader.close()
        finally:
            if writer is not None:
                await writer.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the write path -------------------------------------------------------------------------

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the writer's counters."""
        c = self._counters
        return StoreStats(
            pending=self._pending_count(),
            written=c.written,
            dropped=c.dropped,
            rejected=c.rejected,
            write_errors=c.write_errors,
            retrying=c.retrying,
            last_error=c.last_error,
            batches=c.batches,
            purged=c.purged,
        )

    def submit(self, record: CallRecord, service_day: str) -> None:
        """Queue a finished call for the next batch; returns at once.

        A call submitted again (a replay) replaces the earlier copy. When ``max_pending`` writes
        are already waiting, the call is dropped, counted in ``stats.dropped`` and logged.

        Args:
            record: the final call record.
            service_day: the deployment's local date of the call, ``YYYY-MM-DD``.

        Raises:
            StoreError: the store is closed.
            ValueError: ``service_day`` is not a date, or the record holds a NaN or infinity.
        """
        self._check_accepting()
        rows = _call_rows(record, check_service_day(service_day), self._clock())
        if record.call_id in self._pending.calls or self._has_room("call", record.call_id):
            self._pending.calls[record.call_id] = rows

    def mark_open(
        self, call_id: str, arrived_at: float, payload: dict[str, Any], last_seen: float | None = None
    ) -> None:
        """Note a call in progress (again, to refresh it), so a restart can settle it; batched.

        Args:
            call_id: the call.
            arrived_at: when it arrived.
            payload: what the daemon needs to close it later (JSON-serialisable).
            last_seen: the time of its latest event; ``arrived_at`` if not given.
        """
        self._check_accepting()
        marker = _MarkerRow(call_id, arrived_at, arrived_at if last_seen is None else last_seen, _dumps(payload))
        if call_id in self._pending.markers or self._has_room("open-call marker", call_id):
            self._pending.markers[call_id] = marker

    def mark_closed(self, call_id: str) -> None:
        """Forget a call's open marker; batched. Storing the call's record also does this."""
        self._check_accepting()
        if call_id in self._pending.markers or self._has_room("open-call marker", call_id):
            self._pending.markers[call_id] = None

    async def record_agent_state(self, interval: AgentStateInterval) -> None:
        """Queue one agent-state interval; batched like :meth:`submit`, returns at once.

        An interval is identified by (agent, queue, start): record it again with its ``end`` to
        close it.
        """
        self._check_accepting()
        key = (interval.agent, interval.queue, interval.start)
        if key in self._pending.states or self._has_room("agent state", f"{interval.agent}/{interval.queue}"):
            self._pending.states[key] = interval

    async def run(self) -> None:
        """The writer task: commit the pending batch every ``batch_interval_s``; purge daily.

        Failed writes are retried with a back-off doubling up to ``max_backoff_s``. When
        cancelled, it writes what it can (up to ``flush_timeout_s``) before re-raising.
        """
        self._require_open()
        if self._running:
            raise StoreError(f"{self.path}: the writer is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + DAY_S
        failures = 0
        try:
            while not self._closed:
                await asyncio.sleep(self._backoff(failures))
                if self._closed:
                    break
                ok = await self._run_job(self._write_job)
                failures = 0 if ok else failures + 1
                if ok and loop.time() >= next_purge:
                    try:
                        await self.purge(self._clock())
                        next_purge = loop.time() + DAY_S
                    except StoreError as exc:
                        self._log.warning("retention purge failed", error=str(exc), retry_in_s=PURGE_RETRY_S)
                        next_purge = loop.time() + PURGE_RETRY_S
        except asyncio.CancelledError:
            if not self._closed:
                await self.flush(self._flush_timeout_s)
            raise
        finally:
            self._running = False

    async def flush(self, timeout: float = 10.0) -> bool:
        """Write everything pending now, retrying failures until ``timeout`` seconds pass.

        Returns:
            True if nothing is left pending.
        """
        self._require_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        failures = 0
        while True:
            job = self._start_job(self._write_job)
            # asyncio.wait does not cancel the job on timeout: it finishes (or fails) on its own.
            done, _ = await asyncio.wait({job}, timeout=max(deadline - loop.time(), 0.0))
            if done and job.result():
                failures = 0
                if not self._pending:
                    return True
            elif done:
                failures += 1
            remaining = deadline - loop.time()
            delay = self._backoff(failures) if failures else 0.0
            if not done or remaining <= delay:
                self._log.error(
                    "flush timed out with writes not saved",
                    pending=self._pending_count(),
                    timeout_s=timeout,
                    last_error=self._counters.last_error,
                )
                return False
            if delay:
                await asyncio.sleep(delay)

    def _check_accepting(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def _require_open(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError(f"{self.path}: the store is not open")
        return self._writer

    def _reading(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError(f"{self.path}: the store is not open")
        return self._reader

    def _pending_count(self) -> int:
        return len(self._pending) + (len(self._inflight) if self._inflight is not None else 0)

    def _has_room(self, kind: str, key: str) -> bool:
        if self._pending_count() < self.max_pending:
            return True
        self._counters.dropped += 1
        self._log.error(
            "store backlog full: write dropped",
            kind=kind,
            id=key,
            max_pending=self.max_pending,
            dropped=self._counters.dropped,
            last_error=self._counters.last_error,
        )
        return False

    def _backoff(self, failures: int) -> float:
        if failures == 0:
            return self.batch_interval_s
        return float(min(self.batch_interval_s * 2**failures, self._max_backoff_s))

    def _start_job(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(self._exclusively(work))
        self._jobs.add(task)
        task.add_done_callback(self._job_done)
        return task

    async def _exclusively(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        async with self._lock:
            return await work()

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled():
            # Marks the outcome as seen: the caller that awaited it may have been cancelled.
            task.exception()

    async def _run_job(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        # shield: cancelling the caller must not stop a transaction halfway on the shared
        # connection; the job runs to its end and close() waits for it.
        return await asyncio.shield(self._start_job(work))

    async def _write_job(self) -> bool:
        """Write the pending batch; True when it was written (or there was nothing)."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, _Batch()
        self._inflight = batch
        try:
            try:
                await self._commit(batch)
            except _ROW_ERRORS as exc:
                self._log.warning("batch refused; writing its items one by one", error=str(exc))
                return await self._commit_each(batch)
            except Exception as exc:  # locked, disk full, I/O, connection gone: keep and retry
                self._keep(batch, exc)
                return False
            self._committed(batch)
            return True
        finally:
            self._inflight = None

    async def _commit_each(self, batch: _Batch) -> bool:
        items = list(batch.items())
        for i, item in enumerate(items):
            try:
                await self._commit(item)
            except _ROW_ERRORS as exc:
                self._counters.rejected += 1
                self._log.error("write rejected by the database", error=str(exc), **item.describe())
                continue
            except Exception as exc:
                rest = _Batch()
                for later in items[i:]:
                    rest = rest.under(later)
                self._keep(rest, exc)
                return False
            self._committed(item)
        return True

    def _keep(self, batch: _Batch, exc: Exception) -> None:
        self._pending = batch.under(self._pending)
        c = self._counters
        c.write_errors += 1
        c.last_error = f"{type(exc).__name__}: {exc}"
        first = not c.retrying
        c.retrying = True
        log = self._log.warning if first else self._log.info
        log("store write failed; batch kept for a retry", error=c.last_error, pending=self._pending_count())

    def _committed(self, batch: _Batch) -> None:
        c = self._counters
        c.written += len(batch.calls)
        c.batches += 1
        if c.retrying:
            c.retrying = False
            self._log.info("store writing again", write_errors=c.write_errors)

    async def _commit(self, batch: _Batch) -> None:
        db = self._require_open()
        calls = list(batch.calls.values())
        ids = [(c.call_id,) for c in calls]
        async with _transaction(db):
            await db.executemany(_UPSERT_MARKER, [_marker_params(m) for m in batch.markers.values() if m])
            await db.executemany(_DELETE_MARKER, [(k,) for k, m in batch.markers.items() if m is None])
            await db.executemany(_UPSERT_CALL, [c.call for c in calls])
            for statement in _DELETE_CHILDREN:
                await db.executemany(statement, ids)
            await db.executemany(_INSERT_HOLD, [row for c in calls for row in c.holds])
            await db.executemany(_INSERT_TRANSFER, [row for c in calls for row in c.transfers])
            await db.executemany(_INSERT_RNA, [row for c in calls for row in c.rna])
            await db.executemany(_INSERT_VIOLATION, [row for c in calls for row in c.violations])
            # A stored call is over, whatever marker arrived for it.
            await db.executemany(_DELETE_MARKER, ids)
            await db.executemany(_UPSERT_STATE, [_state_params(s) for s in batch.states.values()])

    # -- retention ------------------------------------------------------------------------------

    async def purge(self, now_epoch: float) -> int:
        """Delete calls (with their child rows and QA tags), agent states and stale open
        markers older than ``retention_days``.

        Returns:
            How many calls were deleted.

        Raises:
            StoreError: the database could not be written.
        """
        self._require_open()
        cutoff = now_epoch - self.retention_days * DAY_S

        async def work() -> int:
            db = self._require_open()
            async with _transaction(db):
                for statement in _PURGE:
                    await db.execute(statement, (cutoff,))
                cursor = await db.execute(_PURGE_CALLS, (cutoff,))
                return cursor.rowcount

        try:
            deleted = await self._run_job(work)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: retention purge failed: {exc}") from exc
        self._counters.purged += deleted
        if deleted:
            self._log.info("retention purge", calls=deleted, retention_days=self.retention_days)
        return deleted

    # -- QA writes ------------------------------------------------------------------------------

    async def add_complaint(
        self,
        call_id: str,
        agent: str | None,
        tagged_by: str,
        note: str,
        tagged_at: float | None = None,
    ) -> None:
        """Tag a call as a complaint against an agent (counts toward ``agent.complaints``).

        Tagging the same call and agent again updates ``tagged_by`` and ``note`` and keeps the
        first ``tagged_at``.

        Args:
            call_id: the call.
            agent: the agent complained about; None for the call's agent.
            tagged_by: the QA user.
            note: why.
            tagged_at: when; the wall clock if not given.

        Raises:
            StoreError: no such call, no agent to blame, or the database could not be written.
        """
        self._require_open()
        if not tagged_by:
            raise StoreError("a complaint needs the name of who tagged it")
        at = self._clock() if tagged_at is None else tagged_at

        async def work() -> str:
            db = self._require_open()
            async with _transaction(db):
                rows = list(await db.execute_fetchall("SELECT agent FROM calls WHERE call_id = ?", (call_id,)))
                pending = self._pending_call(call_id)
                if not rows and pending is None:
                    raise StoreError(f"no call {call_id!r} in the store")
                call_agent = rows[0][0] if rows else pending.agent if pending else None
                blamed = agent or call_agent
                if not blamed:
                    raise StoreError(f"call {call_id!r} has no agent: name the agent the complaint is about")
                await db.execute(
                    """
                    INSERT INTO complaints (call_id, agent, tagged_at, tagged_by, note) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (call_id, agent) DO UPDATE SET tagged_by = excluded.tagged_by, note = excluded.note
                    """,
                    (call_id, blamed, at, tagged_by, note),
                )
            return str(blamed)

        try:
            blamed = await self._run_job(work)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot save the complaint on {call_id!r}: {exc}") from exc
        self._log.info("complaint tagged", call_id=call_id, agent=blamed, tagged_by=tagged_by)

    async def remove_complaint(self, call_id: str, agent: str) -> bool:
        """Remove a complaint tag; True if there was one."""
        self._require_open()

        async def work() -> int:
            db = self._require_open()
            async with _transaction(db):
                cursor = await db.execute("DELETE FROM complaints WHERE call_id = ? AND agent = ?", (call_id, agent))
                return cursor.rowcount

        try:
            removed = await self._run_job(work)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot remove the complaint on {call_id!r}: {exc}") from exc
        return removed > 0

    # -- reads ------------------------------------------------------------------------------------

    async def list_calls(self, f: CallFilter, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Calls matching ``f``, newest first, one page of them.

        Returns:
            The page of record dicts (the JSON contract) and how many calls match in all.
        """
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset not negative (got {limit}, {offset})")
        where, params = _where(f)
        # Two statements rather than count(*) OVER (): that would sort every matching row, JSON
        # and all, where the page alone can walk an index and stop at ``limit``. A call committed
        # between the two may show in the total and not the page; the next page finds it.
        rows = await self._fetch(_LIST_CALLS + where + _LIST_ORDER, [*params, limit, offset])
        total = await self._fetch(_COUNT_CALLS + where, params)
        return [json.loads(row["record_json"]) for row in rows], int(total[0]["total"])

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call's record dict plus ``complaints`` (list of dicts), or None.

        A call still waiting in the write batch is found too.
        """
        pending = self._pending_call(call_id)
        if pending is not None:
            record_json = pending.record_json
        else:
            rows = await self._fetch("SELECT record_json FROM calls WHERE call_id = ?", [call_id])
            if not rows:
                return None
            record_json = rows[0]["record_json"]
        record: dict[str, Any] = json.loads(record_json)
        complaints = await self._fetch(
            """
            SELECT k.call_id, k.agent, k.tagged_at, k.tagged_by, k.note, c.arrived_at
            FROM complaints k LEFT JOIN calls c ON c.call_id = k.call_id
            WHERE k.call_id = ? ORDER BY k.tagged_at, k.agent
            """,
            [call_id],
        )
        record["complaints"] = [_complaint(row).to_dict() for row in complaints]
        return record

    async def calls_between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Record dicts of the calls that arrived in ``[start, end)``, oldest first."""
        rows = await self._fetch(
            "SELECT record_json FROM calls WHERE arrived_at >= ? AND arrived_at < ? ORDER BY arrived_at, call_id",
            [start, end],
        )
        return [json.loads(row["record_json"]) for row in rows]

    async def complaints_between(self, start: float, end: float) -> list[Complaint]:
        """Complaints tagged in ``[start, end)``, oldest first."""
        rows = await self._fetch(
            """
            SELECT k.call_id, k.agent, k.tagged_at, k.tagged_by, k.note, c.arrived_at
            FROM complaints k LEFT JOIN calls c ON c.call_id = k.call_id
            WHERE k.tagged_at >= ? AND k.tagged_at < ? ORDER BY k.tagged_at, k.call_id
            """,
            [start, end],
        )
        return [_complaint(row) for row in rows]

    async def agent_states_between(self, start: float, end: float) -> list[AgentStateInterval]:
        """Agent-state intervals overlapping ``[start, end)`` (open ones included), by start."""
        rows = await self._fetch(
            """
            SELECT agent, queue, state, reason, start, end FROM agent_states
            WHERE start < ? AND (end IS NULL OR end > ?) ORDER BY start, agent, queue
            """,
            [end, start],
        )
        return [AgentStateInterval(r["agent"], r["queue"], r["state"], r["reason"], r["start"], r["end"]) for r in rows]

    async def open_markers(self) -> list[OpenMarker]:
        """Calls marked open and not stored since: what a restarted daemon must close, oldest first."""
        rows = await self._fetch(
            """
            SELECT o.call_id, o.arrived_at, o.last_seen, o.payload FROM open_calls o
            WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.call_id = o.call_id)
            """,
            [],
        )
        markers = {r["call_id"]: _MarkerRow(r["call_id"], r["arrived_at"], r["last_seen"], r["payload"]) for r in rows}
        for batch in (self._inflight, self._pending):
            if batch is None:
                continue
            for call_id, marker in batch.markers.items():
                if marker is None:
                    markers.pop(call_id, None)
                else:
                    markers[call_id] = marker
            for call_id in batch.calls:
                markers.pop(call_id, None)
        ordered = sorted(markers.values(), key=lambda m: (m.arrived_at, m.call_id))
        return [OpenMarker(m.call_id, m.arrived_at, m.last_seen, json.loads(m.payload_json)) for m in ordered]

    async def unanswered_callers(self, since: float) -> list[UnansweredCall]:
        """Inbound calls since ``since`` that no agent answered and that left a caller number."""
        rows = await self._fetch(
            """
            SELECT call_id, caller, queue, arrived_at, ended_at, outcome, after_hours FROM calls
            WHERE arrived_at >= ? AND direction = ? AND outcome <> ? AND caller IS NOT NULL AND caller <> ''
            ORDER BY arrived_at, call_id
            """,
            [since, Direction.INBOUND.value, Outcome.ANSWERED.value],
        )
        return [
            UnansweredCall(
                r["call_id"],
                r["caller"],
                r["queue"],
                r["arrived_at"],
                r["ended_at"],
                Outcome(r["outcome"]),
                bool(r["after_hours"]),
            )
            for r in rows
        ]

    async def reached_numbers(self, since: float) -> dict[str, float]:
        """Numbers reached by an answered call since ``since`` → the latest such answer time.

        The customer's number is the caller of an inbound call and the callee of an outbound one.
        """
        rows = await self._fetch(
            """
            SELECT number, MAX(reached_at) AS reached_at FROM (
                SELECT CASE direction WHEN ? THEN caller ELSE callee END AS number,
                       COALESCE(answered_at, arrived_at) AS reached_at
                FROM calls WHERE outcome = ? AND arrived_at >= ? AND direction IN (?, ?)
            ) WHERE number IS NOT NULL AND number <> '' GROUP BY number
            """,
            [
                Direction.INBOUND.value,
                Outcome.ANSWERED.value,
                since,
                Direction.INBOUND.value,
                Direction.OUTBOUND.value,
            ],
        )
        return {r["number"]: float(r["reached_at"]) for r in rows}

    def _pending_call(self, call_id: str) -> _CallRows | None:
        found = self._pending.calls.get(call_id)
        if found is None and self._inflight is not None:
            found = self._inflight.calls.get(call_id)
        return found

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        db = self._reading()
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: query failed: {exc}") from exc


@asynccontextmanager
async def _transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
    # IMMEDIATE takes the write lock up front: a busy database fails here, before any work.
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield
        await db.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself on some errors (disk full); only roll back what is left.
        if db.in_transaction:
            with suppress(sqlite3.Error, ValueError):
                await db.execute("ROLLBACK")
        raise


def _dumps(value: object) -> str:
    # allow_nan=False: NaN is not JSON, and the API must return valid JSON.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _call_rows(record: CallRecord, service_day: str, stored_at: float) -> _CallRows:
    cid = record.call_id
    record_json = _dumps(record.to_dict())
    call = (
        cid,
        record.direction.value,
        record.caller,
        record.caller_name,
        record.callee,
        record.queue,
        record.agent,
        record.agent_name,
        record.arrived_at,
        record.offered_at,
        record.answered_at,
        record.ended_at,
        secs(record.time_to_answer_s),
        record.rings,
        record.outcome.value,
        secs(record.abandoned_after_s),
        secs(record.talk_s),
        len(record.holds),
        secs(record.hold_total_s),
        secs(record.hold_max_s),
        record.hangup_by.value,
        int(record.after_hours),
        record.recording,
        int(record.partial),
        record.picked_up_by,
        service_day,
        record_json,
        stored_at,
    )
    holds = tuple(
        (cid, seq, h.start, h.end, secs(h.seconds), int(h.ended_call_on_hold), int(h.consult))
        for seq, h in enumerate(record.holds)
    )
    transfers = tuple(
        (
            cid,
            seq,
            t.kind,
            t.from_agent,
            t.to,
            t.at,
            int(t.target_answered),
            int(t.confirmed_before_leave),
            t.target_answered_at,
        )
        for seq, t in enumerate(record.transfers)
    )
    rna = tuple((cid, seq, r.agent, secs(r.ring_s), r.at) for seq, r in enumerate(record.ring_no_answer))
    # dict.fromkeys: a rule listed twice is still one row (the table's key is the rule).
    violations = tuple(
        (cid, rule, kind, record.queue, record.agent, record.ended_at)
        for kind, names in (("violation", record.violations), ("notice", record.notices))
        for rule in dict.fromkeys(names)
    )
    return _CallRows(cid, record.agent, record_json, call, holds, transfers, rna, violations)


def _marker_params(m: _MarkerRow) -> tuple[object, ...]:
    return (m.call_id, m.arrived_at, m.last_seen, m.payload_json)


def _state_params(s: AgentStateInterval) -> tuple[object, ...]:
    return (s.agent, s.queue, s.state, s.reason, s.start, s.end)


def _complaint(row: sqlite3.Row) -> Complaint:
    return Complaint(row["call_id"], row["agent"], row["tagged_at"], row["tagged_by"], row["note"], row["arrived_at"])


def _prefix_upper(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None if there is none)."""
    while prefix:
        last = ord(prefix[-1])
        nxt = last + 1
        if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored as UTF-8
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def _where(f: CallFilter) -> tuple[str, list[object]]:
    """The WHERE clause (with a leading space, or empty) and its parameters."""
    clauses: list[str] = []
    params: list[object] = []

    def add(clause: str, *values: object) -> None:
        clauses.append(clause)
        params.extend(values)

    if f.start is not None:
        add("arrived_at >= ?", f.start)
    if f.end is not None:
        add("arrived_at < ?", f.end)
    if f.queue is not None:
        add("queue = ?", f.queue)
    if f.agent is not None:
        add("agent = ?", f.agent)
    if f.outcome is not None:
        add("outcome = ?", Outcome(f.outcome).value)
    if f.direction is not None:
        add("direction = ?", Direction(f.direction).value)
    if f.partial is not None:
        add("partial = ?", int(f.partial))
    if f.service_day is not None:
        add("service_day = ?", f.service_day)
    if f.rule is not None:
        add(_RULE_MATCH, f.rule)
    if f.caller is not None:
        prefix = f.caller_prefix
        if prefix is None:
            add("caller = ?", f.caller)
        else:
            # A range on the (caller, ...) index rather than LIKE, which is case-folding and
            # treats % and _ as wildcards.
            upper = _prefix_upper(prefix)
            if upper is None:
                add("caller >= ? AND substr(caller, 1, ?) = ?", prefix, len(prefix), prefix)
            else:
                add("caller >= ? AND caller < ?", prefix, upper)
    if f.talk_min is not None:
        add("talk_s >= ?", f.talk_min)
    if f.talk_max is not None:
        add("talk_s <= ?", f.talk_max)
    if f.has_hold is not None:
        add("hold_count > 0" if f.has_hold else "hold_count = 0")
    if f.has_transfer is not None:
        add(_HAS_TRANSFER if f.has_transfer else _NO_TRANSFER)
    if not clauses:
        return "", params
    return " WHERE " + " AND ".join(clauses), params
