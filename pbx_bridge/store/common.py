"""What the SQLite and PostgreSQL call stores share: rows built from a record, the write batch,
the QA filter's WHERE clauses, and the batching, retrying writer around a backend's commit.

Theory of operation: :class:`BatchingStore` holds everything that does not depend on the
database. ``submit`` (and the open-call and agent-state methods) only turn their input into rows
and put them in an in-memory pending batch keyed by call id (open marker, agent-state interval),
so a repeated write replaces itself; they never touch the database. ``run`` is the one writer:
every ``batch_interval_s`` it hands the whole batch to the backend's :meth:`BatchingStore._commit`
(one transaction). When that fails for a reason about the database (locked, full, connection
gone), the batch goes back into memory under anything newer and is retried with a back-off
doubling up to ``max_backoff_s``; ``stats`` shows the errors. Only when the backend says the rows
themselves are invalid are they written one by one, and those refused are logged and counted.

Each write runs as a task holding the write lock, awaited through :func:`asyncio.shield`: a
cancelled caller never leaves a transaction half done. A backend supplies the connection
handling (``_is_open``, ``_close_connections``), the commit, the purge, the classification of
errors and the reads.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from pbx_bridge.engine.model import CallRecord, Direction, Outcome, secs
from pbx_bridge.errors import StoreError
from pbx_bridge.store.model import AgentStateInterval, CallFilter, StoreStats, check_service_day

_T = TypeVar("_T")

DAY_S: Final = 86_400.0
PURGE_RETRY_S: Final = 600.0  # after a failed purge; a day is too long to wait
_LOG_IDS: Final = 20  # a log line names this many ids of a batch, not 100 000


# -- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRows:
    """One call as rows, built when it is submitted (the batch never holds live objects).

    Every tuple starts with the call id; a backend that keys rows by more (PostgreSQL's site)
    puts its key in front.
    """

    call_id: str
    agent: str | None
    record_json: str
    call: tuple[object, ...]
    holds: tuple[tuple[object, ...], ...]
    transfers: tuple[tuple[object, ...], ...]
    rna: tuple[tuple[object, ...], ...]
    violations: tuple[tuple[object, ...], ...]


@dataclass(frozen=True, slots=True)
class MarkerRow:
    """An open-call marker as it is written."""

    call_id: str
    arrived_at: float
    last_seen: float
    payload_json: str


StateKey = tuple[str, str, float]
"""(agent, queue, start): what identifies an agent-state interval."""


def dumps(value: object) -> str:
    """Compact JSON text, UTF-8 kept as is; NaN and infinity refused (the API returns valid JSON)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def call_rows(
    record: CallRecord, service_day: str, stored_at: float, document: dict[str, Any] | None = None
) -> CallRows:
    """The rows of one call: the ``calls`` row (columns in table order) and its child rows.

    ``document`` is ``record.to_dict()`` when the caller has built it already.
    """
    cid = record.call_id
    record_json = dumps(record.to_dict() if document is None else document)
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
    return CallRows(cid, record.agent, record_json, call, holds, transfers, rna, violations)


def marker_params(m: MarkerRow) -> tuple[object, ...]:
    """An ``open_calls`` row: (call_id, arrived_at, last_seen, payload)."""
    return (m.call_id, m.arrived_at, m.last_seen, m.payload_json)


def state_params(s: AgentStateInterval) -> tuple[object, ...]:
    """An ``agent_states`` row: (agent, queue, state, reason, start, end)."""
    return (s.agent, s.queue, s.state, s.reason, s.start, s.end)


# -- the write batch ----------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """Writes waiting for the writer. A marker of None means "closed"."""

    calls: dict[str, CallRows] = field(default_factory=dict)
    markers: dict[str, MarkerRow | None] = field(default_factory=dict)
    states: dict[StateKey, AgentStateInterval] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls) + len(self.markers) + len(self.states)

    def under(self, newer: Batch) -> Batch:
        """This batch with ``newer`` laid over it: for the same key, the newer write wins."""
        return Batch(
            calls={**self.calls, **newer.calls},
            markers={**self.markers, **newer.markers},
            states={**self.states, **newer.states},
        )

    def items(self) -> Iterable[Batch]:
        """Each write as a batch of its own."""
        for call_id, rows in self.calls.items():
            yield Batch(calls={call_id: rows})
        for call_id, marker in self.markers.items():
            yield Batch(markers={call_id: marker})
        for key, state in self.states.items():
            yield Batch(states={key: state})

    def describe(self) -> dict[str, object]:
        """What is in the batch, for a log line (ids of the first few of each kind)."""
        return {
            "call_ids": list(islice(self.calls, _LOG_IDS)),
            "markers": list(islice(self.markers, _LOG_IDS)),
            "agent_states": [f"{agent}/{queue}@{start}" for agent, queue, start in islice(self.states, _LOG_IDS)],
            "counts": {"calls": len(self.calls), "markers": len(self.markers), "agent_states": len(self.states)},
        }


@dataclass(slots=True)
class Counters:
    """The writer's counters behind :class:`~pbx_bridge.store.model.StoreStats`."""

    written: int = 0
    dropped: int = 0
    rejected: int = 0
    write_errors: int = 0
    retrying: bool = False
    last_error: str | None = None
    batches: int = 0
    purged: int = 0


# -- CallFilter → WHERE -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FilterSql:
    """The fragments of the filters that look at other tables; every value is a ``?`` parameter."""

    rule_match: str
    has_transfer: str
    no_transfer: str


def prefix_upper(prefix: str) -> str | None:
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


def filter_clauses(f: CallFilter, sql: FilterSql) -> tuple[list[str], list[object]]:
    """The conditions of ``f`` on the ``calls`` table (``?`` placeholders) and their parameters.

    Only constant strings (these and ``sql``'s) are ever joined into SQL; every value travels as
    a parameter. String comparisons assume a binary (code point) collation.
    """
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
        add(sql.rule_match, f.rule)
    if f.caller is not None:
        prefix = f.caller_prefix
        if prefix is None:
            add("caller = ?", f.caller)
        else:
            # A range on the (caller, ...) index rather than LIKE, which is case-folding and
            # treats % and _ as wildcards.
            upper = prefix_upper(prefix)
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
        add(sql.has_transfer if f.has_transfer else sql.no_transfer)
    return clauses, params


def where(clauses: list[str]) -> str:
    """`` WHERE a AND b`` (with a leading space), or empty without clauses."""
    return " WHERE " + " AND ".join(clauses) if clauses else ""


# -- the batching writer --------------------------------------------------------------------------


class BatchingStore(ABC):
    """The write path of a call store: batches in memory, one writer, retries, stats.

    Args:
        label: names the database in errors and logs (never a password).
        batch_interval_s: how often the writer commits what is pending.
        max_pending: most writes held in memory; beyond it new ones are dropped, counted
            and logged.
        retention_days: calls that arrived longer ago are purged (at open, then daily).
        max_backoff_s: the longest wait between retries of a failing write.
        flush_timeout_s: how long closing, or cancelling :meth:`run`, keeps writing.
        clock: wall clock (epoch seconds) for retention and bookkeeping times.
        log: the bound logger.
    """

    def __init__(
        self,
        *,
        label: str,
        batch_interval_s: float,
        max_pending: int,
        retention_days: int,
        max_backoff_s: float,
        flush_timeout_s: float,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        for name, value in (
            ("batch_interval_s", batch_interval_s),
            ("max_pending", max_pending),
            ("retention_days", retention_days),
            ("max_backoff_s", max_backoff_s),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if flush_timeout_s < 0:
            raise ValueError("flush_timeout_s must not be negative")
        self._label = label
        self.batch_interval_s = batch_interval_s
        self.max_pending = max_pending
        self.retention_days = retention_days
        self._max_backoff_s = max(max_backoff_s, batch_interval_s)
        self._flush_timeout_s = flush_timeout_s
        self._clock = clock
        self._log: Any = log  # a structlog bound logger
        self._closed = False
        self._running = False
        self._pending = Batch()
        self._inflight: Batch | None = None
        self._lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[Any]] = set()
        self._counters = Counters()
        # Called at the start of every write, before the pending batch is taken: the daemon
        # adds its open-call markers there, so a call that ends before the write needs none.
        self.before_write: Callable[[], None] | None = None

    # -- what a backend provides -------------------------------------------------------------------

    @abstractmethod
    def _is_open(self) -> bool:
        """The database connections are open."""

    @abstractmethod
    async def _close_connections(self) -> None:
        """Close every connection, whatever happens."""

    @abstractmethod
    async def _commit(self, batch: Batch) -> None:
        """Write the batch in one transaction (all of it, or nothing)."""

    @abstractmethod
    def _is_row_error(self, exc: Exception) -> bool:
        """``exc`` says the rows are invalid (write them one by one), not that the database failed."""

    @abstractmethod
    async def purge(self, now_epoch: float) -> int:
        """Delete what retention says is too old; return how many calls went."""

    # -- lifecycle ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Write what is pending (up to ``flush_timeout_s``), then close the database. Always closes."""
        if self._closed:
            return
        try:
            if self._is_open() and (self._pending or self._jobs):
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

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Open (creating or upgrading) the database, then purge expired calls."""

    # -- the write path -------------------------------------------------------------------------------

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

    def submit(self, record: CallRecord, service_day: str, document: dict[str, Any] | None = None) -> None:
        """Queue a finished call for the next batch; returns at once.

        A call submitted again (a replay) replaces the earlier copy. When ``max_pending`` writes
        are already waiting, the call is dropped, counted in ``stats.dropped`` and logged.

        Args:
            record: the final call record.
            service_day: the deployment's local date of the call, ``YYYY-MM-DD``.
            document: ``record.to_dict()``, when the caller has it already (it is not built twice).

        Raises:
            StoreError: the store is closed.
            ValueError: ``service_day`` is not a date, or the record holds a NaN or infinity.
        """
        self._check_accepting()
        rows = call_rows(record, check_service_day(service_day), self._clock(), document)
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
        marker = MarkerRow(call_id, arrived_at, arrived_at if last_seen is None else last_seen, dumps(payload))
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
        self._check_open()
        if self._running:
            raise StoreError(f"{self._label}: the writer is already running")
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
        self._check_open()
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
            raise StoreError(f"{self._label}: the store is closed")

    def _check_open(self) -> None:
        if not self._is_open():
            raise StoreError(f"{self._label}: the store is not open")

    def _pending_count(self) -> int:
        return len(self._pending) + (len(self._inflight) if self._inflight is not None else 0)

    def _pending_call(self, call_id: str) -> CallRows | None:
        """A call waiting in the batch (or being written), else None."""
        found = self._pending.calls.get(call_id)
        if found is None and self._inflight is not None:
            found = self._inflight.calls.get(call_id)
        return found

    def _unsaved_markers(self, stored: dict[str, MarkerRow]) -> list[MarkerRow]:
        """``stored`` open markers with the unsaved opens, closes and stored calls laid over, oldest first."""
        markers = dict(stored)
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
        return sorted(markers.values(), key=lambda m: (m.arrived_at, m.call_id))

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
        if self.before_write is not None:
            try:
                self.before_write()
            except Exception:  # the markers are a safety net: never let them stop the writer
                self._log.exception("before_write failed")
        if not self._pending:
            return True
        batch, self._pending = self._pending, Batch()
        self._inflight = batch
        try:
            try:
                await self._commit(batch)
            except Exception as exc:
                if self._is_row_error(exc):
                    self._log.warning("batch refused; writing its items one by one", error=str(exc))
                    return await self._commit_each(batch)
                # locked, disk full, I/O, connection gone: keep and retry
                self._keep(batch, exc)
                return False
            self._committed(batch)
            return True
        finally:
            self._inflight = None

    async def _commit_each(self, batch: Batch) -> bool:
        items = list(batch.items())
        for i, item in enumerate(items):
            try:
                await self._commit(item)
            except Exception as exc:
                if self._is_row_error(exc):
                    self._counters.rejected += 1
                    self._log.error("write rejected by the database", error=str(exc), **item.describe())
                    continue
                rest = Batch()
                for later in items[i:]:
                    rest = rest.under(later)
                self._keep(rest, exc)
                return False
            self._committed(item)
        return True

    def _keep(self, batch: Batch, exc: Exception) -> None:
        self._pending = batch.under(self._pending)
        c = self._counters
        c.write_errors += 1
        c.last_error = f"{type(exc).__name__}: {exc}"
        first = not c.retrying
        c.retrying = True
        log = self._log.warning if first else self._log.info
        log("store write failed; batch kept for a retry", error=c.last_error, pending=self._pending_count())

    def _committed(self, batch: Batch) -> None:
        c = self._counters
        c.written += len(batch.calls)
        c.batches += 1
        if c.retrying:
            c.retrying = False
            self._log.info("store writing again", write_errors=c.write_errors)
