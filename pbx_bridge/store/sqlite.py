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

The batch, the writer loop and the rows built from a record are shared with the PostgreSQL
store (:mod:`pbx_bridge.store.common`); this module holds what is SQLite's own.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import aiosqlite
import structlog

from pbx_bridge.engine.model import Direction, Outcome
from pbx_bridge.errors import StoreError
from pbx_bridge.store.common import (
    DAY_S,
    Batch,
    BatchingStore,
    FilterSql,
    MarkerRow,
    filter_clauses,
    marker_params,
    state_params,
    where,
)
from pbx_bridge.store.model import (
    AgentStateInterval,
    CallFilter,
    Complaint,
    OpenMarker,
    UnansweredCall,
)
from pbx_bridge.store.schema import apply_migrations

# Errors that say the rows themselves are bad: anything else (locked, disk full, I/O) is about
# the database, and the rows are kept for a retry rather than thrown away.
_ROW_ERRORS: Final = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
_MAX_PARAMETERS: Final = 999  # SQLite's smallest default limit of ``?`` parameters in one statement

# Writes are ``INSERT … VALUES {rows} …`` and ``DELETE … IN ({rows})``, many rows to a statement
# (see _write_rows): sqlite3 gives up the GIL around every statement step, and under load each
# hand-over costs the event loop far more than the step itself.
_UPSERT_CALL: Final = """
    INSERT INTO calls (
        call_id, direction, caller, caller_name, callee, queue, agent, agent_name,
        arrived_at, offered_at, answered_at, ended_at, time_to_answer_s, rings, outcome,
        abandoned_after_s, talk_s, hold_count, hold_total_s, hold_max_s, hangup_by, after_hours,
        recording, partial, picked_up_by, service_day, record_json, stored_at
    ) VALUES {rows}
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
    "DELETE FROM holds WHERE call_id IN ({rows})",
    "DELETE FROM transfers WHERE call_id IN ({rows})",
    "DELETE FROM ring_no_answer WHERE call_id IN ({rows})",
    "DELETE FROM violations WHERE call_id IN ({rows})",
)
_INSERT_HOLD: Final = """
    INSERT INTO holds (call_id, seq, start, end, seconds, ended_call_on_hold, consult)
    VALUES {rows}
"""
_INSERT_TRANSFER: Final = """
    INSERT INTO transfers (call_id, seq, kind, from_agent, to_target, at, target_answered,
        confirmed_before_leave, target_answered_at)
    VALUES {rows}
"""
_INSERT_RNA: Final = "INSERT INTO ring_no_answer (call_id, seq, agent, ring_s, at) VALUES {rows}"
_INSERT_VIOLATION: Final = "INSERT INTO violations (call_id, rule, kind, queue, agent, at) VALUES {rows}"
_UPSERT_MARKER: Final = """
    INSERT INTO open_calls (call_id, arrived_at, last_seen, payload) VALUES {rows}
    ON CONFLICT (call_id) DO UPDATE SET
        arrived_at = excluded.arrived_at, last_seen = excluded.last_seen, payload = excluded.payload
"""
_DELETE_MARKERS: Final = "DELETE FROM open_calls WHERE call_id IN ({rows})"
_UPSERT_STATE: Final = """
    INSERT INTO agent_states (agent, queue, state, reason, start, end) VALUES {rows}
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

# CallFilter → WHERE: the fragments that look at other tables (see common.filter_clauses).
_FILTER_SQL: Final = FilterSql(
    rule_match="call_id IN (SELECT v.call_id FROM violations v WHERE v.rule = ?)",
    has_transfer="EXISTS (SELECT 1 FROM transfers t WHERE t.call_id = calls.call_id)",
    no_transfer="NOT EXISTS (SELECT 1 FROM transfers t WHERE t.call_id = calls.call_id)",
)
_LIST_CALLS: Final = "SELECT record_json FROM calls"
_COUNT_CALLS: Final = "SELECT count(*) AS total FROM calls"
_LIST_ORDER: Final = " ORDER BY arrived_at DESC, call_id DESC LIMIT ? OFFSET ?"


class SqliteStore(BatchingStore):
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
        if busy_timeout_s < 0 or flush_timeout_s < 0:
            raise ValueError("busy_timeout_s and flush_timeout_s must not be negative")
        super().__init__(
            label=str(path),
            batch_interval_s=batch_interval_s,
            max_pending=max_pending,
            retention_days=retention_days,
            max_backoff_s=max_backoff_s,
            flush_timeout_s=flush_timeout_s,
            clock=clock,
            log=structlog.get_logger("pbx_bridge.store").bind(store=str(path)),
        )
        self.path = path
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

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

    async def _close_connections(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        try:
            if reader is not None:
                await reader.close()
        finally:
            if writer is not None:
                await writer.close()

    def _is_open(self) -> bool:
        return self._writer is not None

    def _is_row_error(self, exc: Exception) -> bool:
        return isinstance(exc, _ROW_ERRORS)

    def _require_open(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError(f"{self.path}: the store is not open")
        return self._writer

    def _reading(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError(f"{self.path}: the store is not open")
        return self._reader

    # -- the write path -------------------------------------------------------------------------

    async def _commit(self, batch: Batch) -> None:
        db = self._require_open()
        calls = list(batch.calls.values())
        ids = [(c.call_id,) for c in calls]
        async with _transaction(db):
            await _write_rows(db, _UPSERT_MARKER, [marker_params(m) for m in batch.markers.values() if m])
            await _write_rows(db, _DELETE_MARKERS, [(k,) for k, m in batch.markers.items() if m is None])
            await _write_rows(db, _UPSERT_CALL, [c.call for c in calls])
            for statement in _DELETE_CHILDREN:
                await _write_rows(db, statement, ids)
            await _write_rows(db, _INSERT_HOLD, [row for c in calls for row in c.holds])
            await _write_rows(db, _INSERT_TRANSFER, [row for c in calls for row in c.transfers])
            await _write_rows(db, _INSERT_RNA, [row for c in calls for row in c.rna])
            await _write_rows(db, _INSERT_VIOLATION, [row for c in calls for row in c.violations])
            # A stored call is over, whatever marker arrived for it.
            await _write_rows(db, _DELETE_MARKERS, ids)
            await _write_rows(db, _UPSERT_STATE, [state_params(s) for s in batch.states.values()])

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
        stored = {r["call_id"]: MarkerRow(r["call_id"], r["arrived_at"], r["last_seen"], r["payload"]) for r in rows}
        ordered = self._unsaved_markers(stored)
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

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        db = self._reading()
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: query failed: {exc}") from exc


async def _write_rows(db: aiosqlite.Connection, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Run ``statement`` over ``rows``, as many rows to a statement as SQLite's parameter limit allows.

    ``{rows}`` in the statement becomes ``(?, …), (?, …)…`` (one group per row) or, for a single
    column, ``?, ?…`` (an ``IN`` list).
    """
    if not rows:
        return
    width = len(rows[0])
    group = "?" if width == 1 else "(" + ", ".join("?" * width) + ")"
    per = max(_MAX_PARAMETERS // width, 1)
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        sql = statement.format(rows=", ".join([group] * len(chunk)))
        await db.execute(sql, [value for row in chunk for value in row])


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


def _complaint(row: sqlite3.Row) -> Complaint:
    return Complaint(row["call_id"], row["agent"], row["tagged_at"], row["tagged_by"], row["note"], row["arrived_at"])


def _where(f: CallFilter) -> tuple[str, list[object]]:
    """The WHERE clause (with a leading space, or empty) and its parameters."""
    clauses, params = filter_clauses(f, _FILTER_SQL)
    return where(clauses), params
