"""The SQLite schema of the call store, as a list of forward migrations.

Theory of operation: ``schema_version`` holds one row per migration applied. At open,
:func:`apply_migrations` reads the highest version, refuses a database newer than
:data:`MIGRATIONS` knows (an older pbx-bridge must not write a schema it does not understand),
and applies the missing steps in one transaction, so a failed upgrade leaves the database as it
was. A schema change is a new :class:`Migration` appended to :data:`MIGRATIONS`; a released step is
never edited.

Tables: ``calls`` has one row per call with every scalar field of
:class:`~pbx_bridge.engine.model.CallRecord` (times as REAL epoch seconds, durations rounded as
in the JSON form) plus ``record_json``, the exact ``to_dict()`` contract the API returns.
``holds``, ``transfers``, ``ring_no_answer`` and ``violations`` are rebuilt from the record on
every write of a call. ``complaints`` (QA tags), ``agent_states`` (floor intervals) and
``open_calls`` (calls in progress, for restarts) are written on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiosqlite

from pbx_bridge.errors import StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of the schema.

    Attributes:
        version: the schema version once applied; steps are numbered 1, 2, 3, ...
        description: what the step does, kept in ``schema_version``.
        statements: SQL statements, run in order inside the upgrade transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


_V1: Final = (
    """
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY NOT NULL,
        direction TEXT NOT NULL,
        caller TEXT,
        caller_name TEXT,
        callee TEXT,
        queue TEXT,
        agent TEXT,
        agent_name TEXT,
        arrived_at REAL NOT NULL,
        offered_at REAL,
        answered_at REAL,
        ended_at REAL NOT NULL,
        time_to_answer_s REAL,
        rings INTEGER,
        outcome TEXT NOT NULL,
        abandoned_after_s REAL,
        talk_s REAL,
        hold_count INTEGER NOT NULL,
        hold_total_s REAL NOT NULL,
        hold_max_s REAL NOT NULL,
        hangup_by TEXT NOT NULL,
        after_hours INTEGER NOT NULL CHECK (after_hours IN (0, 1)),
        recording TEXT,
        partial INTEGER NOT NULL CHECK (partial IN (0, 1)),
        picked_up_by TEXT,
        service_day TEXT NOT NULL,
        record_json TEXT NOT NULL,
        stored_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE holds (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        seconds REAL NOT NULL,
        ended_call_on_hold INTEGER NOT NULL,
        consult INTEGER NOT NULL,
        PRIMARY KEY (call_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE transfers (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        from_agent TEXT,
        to_target TEXT,
        at REAL NOT NULL,
        target_answered INTEGER NOT NULL,
        confirmed_before_leave INTEGER NOT NULL,
        target_answered_at REAL,
        PRIMARY KEY (call_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE ring_no_answer (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        agent TEXT NOT NULL,
        ring_s REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (call_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE violations (
        call_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('violation', 'notice')),
        queue TEXT,
        agent TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (call_id, kind, rule)
    ) WITHOUT ROWID
    """,
    # A QA tag is not part of the record: it survives re-writes of its call and goes only with
    # the call at retention. One tag per call and agent, since the rule counts calls.
    """
    CREATE TABLE complaints (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        tagged_at REAL NOT NULL,
        tagged_by TEXT NOT NULL,
        note TEXT NOT NULL,
        UNIQUE (call_id, agent)
    )
    """,
    # ``end`` is NULL while the interval is still open; (agent, queue, start) identifies an
    # interval so that closing it, or replaying it, updates the same row.
    """
    CREATE TABLE agent_states (
        id INTEGER PRIMARY KEY,
        agent TEXT NOT NULL,
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        start REAL NOT NULL,
        end REAL,
        UNIQUE (agent, queue, start)
    )
    """,
    """
    CREATE TABLE open_calls (
        call_id TEXT PRIMARY KEY NOT NULL,
        arrived_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        payload TEXT NOT NULL
    )
    """,
    "CREATE INDEX calls_arrived ON calls (arrived_at)",
    "CREATE INDEX calls_agent ON calls (agent, arrived_at)",
    "CREATE INDEX calls_queue ON calls (queue, arrived_at)",
    # (caller, arrived_at) serves both exact numbers and prefix ranges.
    "CREATE INDEX calls_caller ON calls (caller, arrived_at)",
    "CREATE INDEX calls_outcome ON calls (outcome, arrived_at)",
    "CREATE INDEX calls_service_day ON calls (service_day)",
    "CREATE INDEX violations_rule ON violations (rule, at)",
    "CREATE INDEX complaints_agent ON complaints (agent, tagged_at)",
    "CREATE INDEX complaints_tagged ON complaints (tagged_at)",
    "CREATE INDEX agent_states_start ON agent_states (start)",
    "CREATE INDEX agent_states_agent ON agent_states (agent, start)",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "calls with holds, transfers, ring-no-answers, violations; complaints, agent states, open calls", _V1),
)
"""Every schema step, oldest first. Append only."""

LATEST_VERSION: Final = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY NOT NULL,
        description TEXT NOT NULL,
        applied_at REAL NOT NULL
    )
"""


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless the steps are numbered 1, 2, 3, ... without gaps."""
    if not migrations:
        raise ValueError("no migrations")
    for expected, step in enumerate(migrations, start=1):
        if step.version != expected:
            raise ValueError(f"migration {step.version} ({step.description!r}) should be version {expected}")


async def schema_version(db: aiosqlite.Connection) -> int:
    """The version of an open database: 0 when it has no ``schema_version`` table yet."""
    rows = list(
        await db.execute_fetchall(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", ("schema_version",)
        )
    )
    if rows[0][0] == 0:
        return 0
    rows = list(await db.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
    return int(rows[0][0])


async def apply_migrations(
    db: aiosqlite.Connection,
    clock: Callable[[], float],
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bring the database up to the newest version, in one transaction.

    The connection must be in autocommit mode (``isolation_level=None``): this function opens
    and ends its own transaction.

    Args:
        db: the writer connection.
        clock: wall clock for ``applied_at``.
        migrations: the steps; the default is the real schema (tests pass others).

    Returns:
        The schema version now.

    Raises:
        StoreError: the database was written by a newer pbx-bridge (its version is unknown here).
        sqlite3.Error: a statement failed; nothing was changed.
    """
    check_migrations(migrations)
    latest = migrations[-1].version
    # IMMEDIATE takes the write lock first, so two daemons opening one file cannot both upgrade.
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(_CREATE_VERSION_TABLE)
        current = await schema_version(db)
        if current > latest:
            raise StoreError(
                f"the database has schema version {current}, newer than this pbx-bridge knows "
                f"(up to {latest}); upgrade pbx-bridge, or point store.path at another file"
            )
        for step in migrations[current:]:
            for statement in step.statements:
                await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (step.version, step.description, clock()),
            )
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
    return latest
