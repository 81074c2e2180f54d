"""The PostgreSQL call store: one central database for the bridges of several PBX sites.

Theory of operation: the write path is the SQLite store's (:class:`~pbx_bridge.store.common.
BatchingStore`): ``submit`` and the open-call and agent-state methods only put rows in an
in-memory batch, and :meth:`PostgresStore.run`, the one writer, commits the whole batch every
``batch_interval_s`` in one transaction on its own connection: ``executemany`` upserts
(``INSERT ... ON CONFLICT DO UPDATE``), then each call's child rows deleted and inserted again,
so a replayed call leaves exactly one copy. When the server is gone, the connection is killed,
a lock outlasts ``lock_timeout_s`` or a statement ``statement_timeout_s``, the batch goes back
into memory under anything newer and is retried with a capped back-off on a new connection;
the writes are idempotent, so a batch whose COMMIT was lost with its connection is simply
written again. Only rows the server refuses as invalid (bad data, a constraint, a trigger's
``RAISE``) are written one by one, and those refused are logged and counted.

Sites: every row carries the bridge's ``site``, which leads every key (see
:mod:`pbx_bridge.store.pg_schema`), so bridges sharing the database never touch each other's
rows. Writes, purges, complaints and open markers are always this bridge's own. Reads default to
the own site too (the daemon and the QA API see what a SQLite store would show them); a read
given ``site=`` another name reads that site, and ``site=ALL_SITES`` reads every site, adding
``"site"`` to each record dict (call ids can repeat between sites). Dataclass results carry
their site (:class:`SiteComplaint`, :class:`SiteAgentState`, :class:`SiteUnansweredCall`).

Reads run on a small connection pool beside the writer's connection, so a QA query never
queues behind a write waiting on a lock. Everything is awaited through asyncpg: nothing blocks
the event loop. Every value travels as a ``$n`` parameter; the only SQL built at run time joins
constant fragments.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]
import structlog

from pbx_bridge.engine.model import Direction, Outcome
from pbx_bridge.errors import StoreError
from pbx_bridge.store.common import (
    DAY_S,
    Batch,
    BatchingStore,
    CallRows,
    FilterSql,
    MarkerRow,
    filter_clauses,
    marker_params,
    state_params,
    where,
)
from pbx_bridge.store.model import AgentStateInterval, CallFilter, Complaint, OpenMarker, UnansweredCall
from pbx_bridge.store.pg_schema import apply_migrations

_T = TypeVar("_T")

ALL_SITES: Final = "*"
"""``site=ALL_SITES``: a read that spans every site in the database."""

MAX_SITE_LEN: Final = 64
DEFAULT_SITE: Final = "default"

_E = asyncpg.exceptions
# The server or the client says the rows themselves are bad: class 22 (data exception), 23
# (integrity constraint), 54 (a value past a limit), a trigger's RAISE; asyncpg's own DataError is
# a Python value it cannot encode. Anything else (connection gone, admin shutdown, lock or
# statement timeout, serialisation failure, disk full, a missing table) keeps the rows for a retry.
_ROW_ERRORS: Final = (
    _E.DataError,
    _E.IntegrityConstraintViolationError,
    _E.ProgramLimitExceededError,
    _E.RaiseError,
    _E._base.DataError,
)
# What a read, a QA write or opening the store can fail with: becomes a StoreError.
_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, _E._base.InternalClientError, OSError, TimeoutError)
# The connection went away under the query (killed, server restarted, network): a read is tried
# once more on a fresh connection. A connection killed while idle is often noticed only by its
# next query.
_CONNECTION_LOST: Final = (
    _E.PostgresConnectionError,
    _E.AdminShutdownError,
    _E.CrashShutdownError,
    _E.CannotConnectNowError,
    _E.IdleSessionTimeoutError,
    _E._base.InternalClientError,
    asyncpg.InterfaceError,
    ConnectionError,
)
READ_ATTEMPTS: Final = 2

_UPSERT_CALL: Final = """
    INSERT INTO calls (
        site, call_id, direction, caller, caller_name, callee, queue, agent, agent_name,
        arrived_at, offered_at, answered_at, ended_at, time_to_answer_s, rings, outcome,
        abandoned_after_s, talk_s, hold_count, hold_total_s, hold_max_s, hangup_by, after_hours,
        recording, partial, picked_up_by, service_day, record_json, stored_at
    ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
        $21, $22, $23, $24, $25, $26, $27, $28, $29)
    ON CONFLICT (site, call_id) DO UPDATE SET
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
    "DELETE FROM holds WHERE site = $1 AND call_id = ANY($2::text[])",
    "DELETE FROM transfers WHERE site = $1 AND call_id = ANY($2::text[])",
    "DELETE FROM ring_no_answer WHERE site = $1 AND call_id = ANY($2::text[])",
    "DELETE FROM violations WHERE site = $1 AND call_id = ANY($2::text[])",
)
_INSERT_HOLD: Final = """
    INSERT INTO holds (site, call_id, seq, start, "end", seconds, ended_call_on_hold, consult)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_INSERT_TRANSFER: Final = """
    INSERT INTO transfers (site, call_id, seq, kind, from_agent, to_target, at, target_answered,
        confirmed_before_leave, target_answered_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
_INSERT_RNA: Final = (
    "INSERT INTO ring_no_answer (site, call_id, seq, agent, ring_s, at) VALUES ($1, $2, $3, $4, $5, $6)"
)
_INSERT_VIOLATION: Final = (
    "INSERT INTO violations (site, call_id, rule, kind, queue, agent, at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_UPSERT_MARKER: Final = """
    INSERT INTO open_calls (site, call_id, arrived_at, last_seen, payload) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (site, call_id) DO UPDATE SET
        arrived_at = excluded.arrived_at, last_seen = excluded.last_seen, payload = excluded.payload
"""
_DELETE_MARKERS: Final = "DELETE FROM open_calls WHERE site = $1 AND call_id = ANY($2::text[])"
_UPSERT_STATE: Final = """
    INSERT INTO agent_states (site, agent, queue, state, reason, start, "end") VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (site, agent, queue, start) DO UPDATE SET
        state = excluded.state, reason = excluded.reason, "end" = excluded."end"
"""
_PURGE: Final = (
    "DELETE FROM holds WHERE site = $1 AND call_id IN (SELECT call_id FROM calls WHERE site = $1 AND arrived_at < $2)",
    "DELETE FROM transfers WHERE site = $1 AND call_id IN"
    " (SELECT call_id FROM calls WHERE site = $1 AND arrived_at < $2)",
    "DELETE FROM ring_no_answer WHERE site = $1 AND call_id IN"
    " (SELECT call_id FROM calls WHERE site = $1 AND arrived_at < $2)",
    "DELETE FROM violations WHERE site = $1 AND call_id IN"
    " (SELECT call_id FROM calls WHERE site = $1 AND arrived_at < $2)",
    "DELETE FROM complaints WHERE site = $1 AND call_id IN"
    " (SELECT call_id FROM calls WHERE site = $1 AND arrived_at < $2)",
    'DELETE FROM agent_states WHERE site = $1 AND COALESCE("end", start) < $2',
    "DELETE FROM open_calls WHERE site = $1 AND last_seen < $2",
)
_PURGE_CALLS: Final = "DELETE FROM calls WHERE site = $1 AND arrived_at < $2"

# CallFilter → WHERE (see common.filter_clauses): the fragments that look at other tables match
# the call's site too. ``?`` placeholders, numbered by _numbered().
_FILTER_SQL: Final = FilterSql(
    rule_match="EXISTS (SELECT 1 FROM violations v WHERE v.site = calls.site AND v.call_id = calls.call_id"
    " AND v.rule = ?)",
    has_transfer="EXISTS (SELECT 1 FROM transfers t WHERE t.site = calls.site AND t.call_id = calls.call_id)",
    no_transfer="NOT EXISTS (SELECT 1 FROM transfers t WHERE t.site = calls.site AND t.call_id = calls.call_id)",
)
_LIST_CALLS: Final = "SELECT site, record_json FROM calls"
_COUNT_CALLS: Final = "SELECT count(*) AS total FROM calls"
_LIST_ORDER: Final = " ORDER BY arrived_at DESC, call_id DESC, site DESC LIMIT ? OFFSET ?"
_COMPLAINTS: Final = """
    SELECT k.site, k.call_id, k.agent, k.tagged_at, k.tagged_by, k.note, c.arrived_at
    FROM complaints k LEFT JOIN calls c ON c.site = k.site AND c.call_id = k.call_id
"""


@dataclass(frozen=True, slots=True)
class SiteComplaint(Complaint):
    """A complaint, and the site of its call."""

    site: str = ""


@dataclass(frozen=True, slots=True)
class SiteAgentState(AgentStateInterval):
    """An agent-state interval, and the site of the agent."""

    site: str = ""


@dataclass(frozen=True, slots=True)
class SiteUnansweredCall(UnansweredCall):
    """An unanswered call, and the site it came in at."""

    site: str = ""


class PostgresStore(BatchingStore):
    """Call records, QA tags and floor history of one site, in a PostgreSQL database shared by sites.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (libpq URI; asyncpg also reads the
            ``PG*`` environment variables and ``~/.pgpass``). Never logged: errors name the
            server without the password.
        batch_interval_s: how often the writer commits what is pending.
        max_pending: most writes held in memory; beyond it new ones are dropped, counted
            and logged.
        retention_days: this site's calls that arrived longer ago are purged (at open, then
            daily). Each bridge purges its own site only.
        site: this bridge's site (its PBX); leads every key, so it must be the same across
            restarts and different from every other bridge writing to the database.
        lock_timeout_s: how long a statement waits for a lock before the write fails and is
            retried (PostgreSQL's ``lock_timeout``).
        statement_timeout_s: the longest any statement may run (``statement_timeout``, and the
            client's own timeout a little later).
        connect_timeout_s: how long a connection attempt, or waiting for a pooled reader, may take.
        pool_size: most reader connections.
        max_backoff_s: the longest wait between retries of a failing write.
        flush_timeout_s: how long closing, or cancelling :meth:`run`, keeps writing.
        clock: wall clock (epoch seconds) for retention and bookkeeping times.
    """

    def __init__(
        self,
        dsn: str,
        batch_interval_s: float = 0.5,
        max_pending: int = 100_000,
        retention_days: int = 365,
        site: str = DEFAULT_SITE,
        *,
        lock_timeout_s: float = 5.0,
        statement_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        pool_size: int = 4,
        max_backoff_s: float = 30.0,
        flush_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not site or len(site) > MAX_SITE_LEN or ALL_SITES in site or not site.isprintable():
            raise ValueError(f"site must be 1 to {MAX_SITE_LEN} printable characters without '*', not {site!r}")
        for name, value in (
            ("lock_timeout_s", lock_timeout_s),
            ("statement_timeout_s", statement_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("pool_size", pool_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        label = f"{redact_dsn(dsn)} (site {site})"
        super().__init__(
            label=label,
            batch_interval_s=batch_interval_s,
            max_pending=max_pending,
            retention_days=retention_days,
            max_backoff_s=max_backoff_s,
            flush_timeout_s=flush_timeout_s,
            clock=clock,
            log=structlog.get_logger("pbx_bridge.store").bind(store=redact_dsn(dsn), site=site),
        )
        self.site = site
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        # The client gives the server its own timeout first, and a margin to say so.
        self._command_timeout_s = statement_timeout_s + 5.0
        self._server_settings = {
            "application_name": f"pbx-bridge {site}"[:63],
            "lock_timeout": str(max(int(lock_timeout_s * 1000), 1)),
            "statement_timeout": str(max(int(statement_timeout_s * 1000), 1)),
            "TimeZone": "UTC",
        }
        self._pool_size = pool_size
        self._writer: Any = None  # asyncpg.Connection, replaced when lost
        self._pool: Any = None  # asyncpg.Pool of readers

    def __repr__(self) -> str:
        return f"PostgresStore({self._label})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or upgrade the schema, open the reader pool, then purge expired calls.

        Raises:
            StoreError: the server cannot be reached or refuses the login, or the database has a
                schema newer than this code knows.
        """
        if self._closed:
            raise StoreError(f"{self._label}: the store was closed; make a new one")
        if self._pool is not None:
            return
        try:
            self._writer = await self._connect()
            await apply_migrations(self._writer, self._clock)
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._command_timeout_s,
                server_settings=self._server_settings,
                max_inactive_connection_lifetime=300.0,
            )
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, StoreError):
                raise StoreError(f"{self._label}: {exc}") from exc
            if isinstance(exc, (*_DB_ERRORS, ValueError)):
                raise StoreError(f"{self._label}: cannot open the call store: {_describe(exc)}") from exc
            raise
        self._log.info("store opened")
        if self.site == DEFAULT_SITE:
            self._log.warning(
                "store site is the default one: give each bridge sharing this database its own site (mqtt.site)"
            )
        try:
            await self.purge(self._clock())
        except StoreError as exc:
            # Retention can wait for the writer's next purge; the calls coming in cannot.
            self._log.warning("retention purge at open failed", error=str(exc))

    async def _connect(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            command_timeout=self._command_timeout_s,
            server_settings=self._server_settings,
        )

    async def _close_connections(self) -> None:
        writer, pool = self._writer, self._pool
        self._writer = self._pool = None
        try:
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), self._connect_timeout_s)
                except _DB_ERRORS:
                    pool.terminate()
                except BaseException:
                    pool.terminate()
                    raise
        finally:
            if writer is not None:
                await _close_quietly(writer, self._connect_timeout_s)

    def _is_open(self) -> bool:
        return self._pool is not None

    def _is_row_error(self, exc: Exception) -> bool:
        return isinstance(exc, _ROW_ERRORS)

    # -- the write path -------------------------------------------------------------------------

    async def _in_transaction(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run ``work(connection)`` in one transaction on the writer's connection (made anew if lost).

        Called only from a job (under the write lock). After a failure that may have left the
        connection in doubt, the connection is dropped: the next attempt starts on a fresh one.
        """
        self._check_open()
        conn = self._writer
        if conn is None or conn.is_closed():
            self._writer = None
            conn = self._writer = await self._connect()
        tx = conn.transaction()
        await tx.start()
        try:
            result = await work(conn)
            await tx.commit()
        except BaseException as exc:
            await self._after_failure(conn, tx, exc)
            raise
        return result

    async def _after_failure(self, conn: Any, tx: Any, exc: BaseException) -> None:
        if not conn.is_closed() and not isinstance(exc, (TimeoutError, asyncio.CancelledError, *_CONNECTION_LOST)):
            # The server (or the work) said no and the connection looks fine: roll back, keep it.
            try:
                await asyncio.wait_for(tx.rollback(), self._connect_timeout_s)
            except Exception:  # noqa: S110 -- whatever it was, the connection is dropped below
                pass
            else:
                return
        # Killed, timed out, cancelled, or it would not roll back: this connection is done.
        if self._writer is conn:
            self._writer = None
        conn.terminate()

    async def _commit(self, batch: Batch) -> None:
        await self._in_transaction(lambda conn: self._write_batch(conn, batch))

    async def _write_batch(self, conn: Any, batch: Batch) -> None:
        site = self.site
        calls = list(batch.calls.values())
        ids = [c.call_id for c in calls]
        opened = [(site, *marker_params(m)) for m in batch.markers.values() if m]
        closed = [call_id for call_id, m in batch.markers.items() if m is None]
        await _many(conn, _UPSERT_MARKER, opened)
        if closed:
            await conn.execute(_DELETE_MARKERS, site, closed)
        if calls:
            await _many(conn, _UPSERT_CALL, [(site, *c.call) for c in calls])
            for statement in _DELETE_CHILDREN:
                await conn.execute(statement, site, ids)
            await _many(conn, _INSERT_HOLD, _children(site, calls, "holds"))
            await _many(conn, _INSERT_TRANSFER, _children(site, calls, "transfers"))
            await _many(conn, _INSERT_RNA, _children(site, calls, "rna"))
            await _many(conn, _INSERT_VIOLATION, _children(site, calls, "violations"))
            # A stored call is over, whatever marker arrived for it.
            await conn.execute(_DELETE_MARKERS, site, ids)
        await _many(conn, _UPSERT_STATE, [(site, *state_params(s)) for s in batch.states.values()])

    # -- retention ------------------------------------------------------------------------------

    async def purge(self, now_epoch: float) -> int:
        """Delete this site's calls (with their child rows and QA tags), agent states and stale
        open markers older than ``retention_days``. Other sites keep theirs.

        Returns:
            How many calls were deleted.

        Raises:
            StoreError: the database could not be written.
        """
        self._check_open()
        cutoff = now_epoch - self.retention_days * DAY_S

        async def work(conn: Any) -> int:
            for statement in _PURGE:
                await conn.execute(statement, self.site, cutoff)
            return _rowcount(await conn.execute(_PURGE_CALLS, self.site, cutoff))

        try:
            deleted = await self._run_job(lambda: self._in_transaction(work))
        except _DB_ERRORS as exc:
            raise StoreError(f"{self._label}: retention purge failed: {_describe(exc)}") from exc
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
        """Tag one of this site's calls as a complaint against an agent (counts toward ``agent.complaints``).

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
        self._check_open()
        if not tagged_by:
            raise StoreError("a complaint needs the name of who tagged it")
        at = self._clock() if tagged_at is None else tagged_at

        async def work(conn: Any) -> str:
            row = await conn.fetchrow("SELECT agent FROM calls WHERE site = $1 AND call_id = $2", self.site, call_id)
            pending = self._pending_call(call_id)
            if row is None and pending is None:
                raise StoreError(f"no call {call_id!r} in the store")
            call_agent = row["agent"] if row is not None else pending.agent if pending else None
            blamed = agent or call_agent
            if not blamed:
                raise StoreError(f"call {call_id!r} has no agent: name the agent the complaint is about")
            await conn.execute(
                """
                INSERT INTO complaints (site, call_id, agent, tagged_at, tagged_by, note)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (site, call_id, agent) DO UPDATE SET tagged_by = excluded.tagged_by, note = excluded.note
                """,
                self.site,
                call_id,
                blamed,
                at,
                tagged_by,
                note,
            )
            return str(blamed)

        try:
            blamed = await self._run_job(lambda: self._in_transaction(work))
        except _DB_ERRORS as exc:
            raise StoreError(f"{self._label}: cannot save the complaint on {call_id!r}: {_describe(exc)}") from exc
        self._log.info("complaint tagged", call_id=call_id, agent=blamed, tagged_by=tagged_by)

    async def remove_complaint(self, call_id: str, agent: str) -> bool:
        """Remove a complaint tag from one of this site's calls; True if there was one."""
        self._check_open()

        async def work(conn: Any) -> int:
            status = await conn.execute(
                "DELETE FROM complaints WHERE site = $1 AND call_id = $2 AND agent = $3", self.site, call_id, agent
            )
            return _rowcount(status)

        try:
            removed = await self._run_job(lambda: self._in_transaction(work))
        except _DB_ERRORS as exc:
            raise StoreError(f"{self._label}: cannot remove the complaint on {call_id!r}: {_describe(exc)}") from exc
        return removed > 0

    # -- reads ------------------------------------------------------------------------------------

    async def sites(self) -> list[str]:
        """Every site with calls in the database, sorted."""
        rows = await self._fetch("SELECT DISTINCT site FROM calls ORDER BY site", [])
        return [str(r["site"]) for r in rows]

    async def list_calls(
        self, f: CallFilter, limit: int = 100, offset: int = 0, *, site: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Calls matching ``f``, newest first, one page of them.

        Args:
            f: the filter.
            limit: the page size.
            offset: how many matching calls come before the page.
            site: None for this bridge's site, another site's name, or :data:`ALL_SITES` (each
                record dict then says its ``"site"``).

        Returns:
            The page of record dicts (the JSON contract) and how many calls match in all.
        """
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset not negative (got {limit}, {offset})")
        scope = self._scope(site)
        clauses, params = filter_clauses(f, _FILTER_SQL)
        if scope is not None:
            clauses.insert(0, "site = ?")
            params.insert(0, scope)
        # Two statements rather than count(*) OVER (): that would sort every matching row, JSON
        # and all, where the page alone can walk an index and stop at ``limit``.
        rows = await self._fetch(_numbered(_LIST_CALLS + where(clauses) + _LIST_ORDER), [*params, limit, offset])
        total = await self._fetch(_numbered(_COUNT_CALLS + where(clauses)), params)
        return [_record(row, scope) for row in rows], int(total[0]["total"])

    async def get_call(self, call_id: str, *, site: str | None = None) -> dict[str, Any] | None:
        """One call's record dict plus ``complaints`` (list of dicts), or None.

        A call of this site still waiting in the write batch is found too.

        Args:
            call_id: the call.
            site: None for this bridge's site, or another site's name (not :data:`ALL_SITES`: a
                call id names a call only within its site).
        """
        scope = self._scope(site)
        if scope is None:
            raise ValueError("get_call reads one site: a call id is unique only within its site")
        pending = self._pending_call(call_id) if scope == self.site else None
        if pending is not None:
            record_json = pending.record_json
        else:
            rows = await self._fetch("SELECT record_json FROM calls WHERE site = $1 AND call_id = $2", [scope, call_id])
            if not rows:
                return None
            record_json = rows[0]["record_json"]
        record: dict[str, Any] = json.loads(record_json)
        complaints = await self._fetch(
            _COMPLAINTS + " WHERE k.site = $1 AND k.call_id = $2 ORDER BY k.tagged_at, k.agent", [scope, call_id]
        )
        record["complaints"] = [_complaint(row).to_dict() for row in complaints]
        return record

    async def calls_between(self, start: float, end: float, *, site: str | None = None) -> list[dict[str, Any]]:
        """Record dicts of the calls that arrived in ``[start, end)``, oldest first (``site`` as in list_calls)."""
        scope = self._scope(site)
        rows = await self._fetch(
            "SELECT site, record_json FROM calls WHERE ($1::text IS NULL OR site = $1) AND arrived_at >= $2"
            " AND arrived_at < $3 ORDER BY arrived_at, call_id, site",
            [scope, start, end],
        )
        return [_record(row, scope) for row in rows]

    async def complaints_between(self, start: float, end: float, *, site: str | None = None) -> list[Complaint]:
        """Complaints tagged in ``[start, end)``, oldest first (:class:`SiteComplaint` each)."""
        rows = await self._fetch(
            _COMPLAINTS + " WHERE ($1::text IS NULL OR k.site = $1) AND k.tagged_at >= $2 AND k.tagged_at < $3"
            " ORDER BY k.tagged_at, k.call_id, k.site",
            [self._scope(site), start, end],
        )
        return [_complaint(row) for row in rows]

    async def agent_states_between(
        self, start: float, end: float, *, site: str | None = None
    ) -> list[AgentStateInterval]:
        """Agent-state intervals overlapping ``[start, end)`` (open ones included), by start.

        Each is a :class:`SiteAgentState`; ``site`` as in :meth:`list_calls`.
        """
        rows = await self._fetch(
            """
            SELECT site, agent, queue, state, reason, start, "end" FROM agent_states
            WHERE ($1::text IS NULL OR site = $1) AND start < $2 AND ("end" IS NULL OR "end" > $3)
            ORDER BY start, agent, queue, site
            """,
            [self._scope(site), end, start],
        )
        return [
            SiteAgentState(r["agent"], r["queue"], r["state"], r["reason"], r["start"], r["end"], site=r["site"])
            for r in rows
        ]

    async def open_markers(self) -> list[OpenMarker]:
        """This site's calls marked open and not stored since: what a restarted daemon must close, oldest first."""
        rows = await self._fetch(
            """
            SELECT o.call_id, o.arrived_at, o.last_seen, o.payload FROM open_calls o
            WHERE o.site = $1 AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.site = o.site AND c.call_id = o.call_id)
            """,
            [self.site],
        )
        stored = {r["call_id"]: MarkerRow(r["call_id"], r["arrived_at"], r["last_seen"], r["payload"]) for r in rows}
        ordered = self._unsaved_markers(stored)
        return [OpenMarker(m.call_id, m.arrived_at, m.last_seen, json.loads(m.payload_json)) for m in ordered]

    async def unanswered_callers(self, since: float, *, site: str | None = None) -> list[UnansweredCall]:
        """Inbound calls since ``since`` that no agent answered and that left a caller number."""
        rows = await self._fetch(
            """
            SELECT site, call_id, caller, queue, arrived_at, ended_at, outcome, after_hours FROM calls
            WHERE ($1::text IS NULL OR site = $1) AND arrived_at >= $2 AND direction = $3 AND outcome <> $4
              AND caller IS NOT NULL AND caller <> ''
            ORDER BY arrived_at, call_id, site
            """,
            [self._scope(site), since, Direction.INBOUND.value, Outcome.ANSWERED.value],
        )
        return [
            SiteUnansweredCall(
                r["call_id"],
                r["caller"],
                r["queue"],
                r["arrived_at"],
                r["ended_at"],
                Outcome(r["outcome"]),
                bool(r["after_hours"]),
                site=r["site"],
            )
            for r in rows
        ]

    async def reached_numbers(self, since: float, *, site: str | None = None) -> dict[str, float]:
        """Numbers reached by an answered call since ``since`` → the latest such answer time.

        The customer's number is the caller of an inbound call and the callee of an outbound one.
        With :data:`ALL_SITES`, a number reached at any site counts.
        """
        rows = await self._fetch(
            """
            SELECT number, MAX(reached_at) AS reached_at FROM (
                SELECT CASE direction WHEN $1 THEN caller ELSE callee END AS number,
                       COALESCE(answered_at, arrived_at) AS reached_at
                FROM calls
                WHERE ($2::text IS NULL OR site = $2) AND outcome = $3 AND arrived_at >= $4
                  AND direction IN ($1, $5)
            ) AS reached WHERE number IS NOT NULL AND number <> '' GROUP BY number
            """,
            [Direction.INBOUND.value, self._scope(site), Outcome.ANSWERED.value, since, Direction.OUTBOUND.value],
        )
        return {r["number"]: float(r["reached_at"]) for r in rows}

    def _scope(self, site: str | None) -> str | None:
        """The site a read filters on: None (no filter) for ALL_SITES."""
        if site is None:
            return self.site
        if site == ALL_SITES:
            return None
        return site

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self._label}: the store is not open")
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                async with pool.acquire(timeout=self._connect_timeout_s) as conn:
                    rows: list[Any] = await conn.fetch(sql, *params)
            except _CONNECTION_LOST as exc:
                if attempt == READ_ATTEMPTS:
                    raise StoreError(f"{self._label}: query failed: {_describe(exc)}") from exc
                self._log.info("read lost its connection; trying a new one", error=_describe(exc))
            except _DB_ERRORS as exc:
                raise StoreError(f"{self._label}: query failed: {_describe(exc)}") from exc
            else:
                return rows
        raise AssertionError("unreachable")


def redact_dsn(dsn: str) -> str:
    """The DSN without its password or options, for logs and errors: ``postgresql://user@host:port/db``."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "postgresql"
    if parts.scheme not in ("postgres", "postgresql"):
        return "postgresql"
    user = f"{parts.username}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{user}{host}{f':{port}' if port else ''}{parts.path}"


def _numbered(sql: str) -> str:
    """``?`` placeholders (from constant fragments only) as PostgreSQL's ``$1``, ``$2``, ..."""
    pieces = sql.split("?")
    out = [pieces[0]]
    for number, piece in enumerate(pieces[1:], start=1):
        out.append(f"${number}{piece}")
    return "".join(out)


async def _many(conn: Any, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    if rows:
        await conn.executemany(sql, rows)


def _children(site: str, calls: Sequence[CallRows], kind: str) -> list[tuple[object, ...]]:
    return [(site, *row) for c in calls for row in getattr(c, kind)]


def _rowcount(status: str) -> int:
    """The row count of a command tag (``DELETE 3`` → 3)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _record(row: Any, scope: str | None) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(row["record_json"])
    if scope is None:
        record["site"] = row["site"]
    return record


def _complaint(row: Any) -> SiteComplaint:
    return SiteComplaint(
        row["call_id"],
        row["agent"],
        row["tagged_at"],
        row["tagged_by"],
        row["note"],
        row["arrived_at"],
        site=row["site"],
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, TimeoutError) else text


async def _close_quietly(conn: Any, timeout: float) -> None:
    """Close a connection politely, or cut it: a dead server must not keep close() waiting."""
    try:
        await asyncio.wait_for(conn.close(), timeout)
    except _DB_ERRORS:
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise
