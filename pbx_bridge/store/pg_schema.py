"""The PostgreSQL schema of the central call store, as a list of forward migrations.

Theory of operation: the same tables, columns, indexes and versioning as the SQLite schema
(:mod:`pbx_bridge.store.schema`), so the same queries run on both, with one difference: every
table has a ``site`` column that leads its keys. Several bridges (one per PBX) share one
database, and a call id is unique only within its PBX: calls are keyed by ``(site, call_id)``,
complaints by ``(site, call_id, agent)``, agent states by ``(site, agent, queue, start)``.

Types follow SQLite's: times and durations are ``DOUBLE PRECISION`` epoch seconds (PostgreSQL's
``REAL`` is only 4 bytes), flags ``SMALLINT`` 0/1 as in SQLite, ``record_json`` and ``payload`` the
exact JSON text. Text columns use the ``"C"`` collation: comparisons and ``ORDER BY`` are by
code point as in SQLite, whatever the database's locale, so a caller prefix is an index range
and pages come in the same order on both backends. ``end`` is a reserved word here: it is quoted.

Versions run in step with the SQLite schema: a schema change appends a :class:`Migration` to
both lists with the same number. :func:`apply_migrations` runs every missing step in one
transaction (PostgreSQL's DDL is transactional: a failed upgrade leaves nothing behind) under a
transaction-level advisory lock, so bridges starting together upgrade the database once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from pbx_bridge.errors import StoreError
from pbx_bridge.store.schema import Migration, check_migrations

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "apply_migrations", "schema_version"]

_TEXT: Final = 'TEXT COLLATE "C"'
_TIME: Final = "DOUBLE PRECISION"

# One key for pg_advisory_xact_lock: "pbx-bridge schema" (any constant unlikely to clash will do).
ADVISORY_LOCK_KEY: Final = 0x7062_7862_5343_4D41
MIGRATION_TIMEOUT_S: Final = 600.0

_V1: Final = (
    f"""
    CREATE TABLE calls (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        direction {_TEXT} NOT NULL,
        caller {_TEXT},
        caller_name {_TEXT},
        callee {_TEXT},
        queue {_TEXT},
        agent {_TEXT},
        agent_name {_TEXT},
        arrived_at {_TIME} NOT NULL,
        offered_at {_TIME},
        answered_at {_TIME},
        ended_at {_TIME} NOT NULL,
        time_to_answer_s {_TIME},
        rings INTEGER,
        outcome {_TEXT} NOT NULL,
        abandoned_after_s {_TIME},
        talk_s {_TIME},
        hold_count INTEGER NOT NULL,
        hold_total_s {_TIME} NOT NULL,
        hold_max_s {_TIME} NOT NULL,
        hangup_by {_TEXT} NOT NULL,
        after_hours SMALLINT NOT NULL CHECK (after_hours IN (0, 1)),
        recording {_TEXT},
        partial SMALLINT NOT NULL CHECK (partial IN (0, 1)),
        picked_up_by {_TEXT},
        service_day {_TEXT} NOT NULL,
        record_json TEXT NOT NULL,
        stored_at {_TIME} NOT NULL,
        PRIMARY KEY (site, call_id)
    )
    """,
    f"""
    CREATE TABLE holds (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        seq INTEGER NOT NULL,
        start {_TIME} NOT NULL,
        "end" {_TIME} NOT NULL,
        seconds {_TIME} NOT NULL,
        ended_call_on_hold SMALLINT NOT NULL,
        consult SMALLINT NOT NULL,
        PRIMARY KEY (site, call_id, seq)
    )
    """,
    f"""
    CREATE TABLE transfers (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        seq INTEGER NOT NULL,
        kind {_TEXT} NOT NULL,
        from_agent {_TEXT},
        to_target {_TEXT},
        at {_TIME} NOT NULL,
        target_answered SMALLINT NOT NULL,
        confirmed_before_leave SMALLINT NOT NULL,
        target_answered_at {_TIME},
        PRIMARY KEY (site, call_id, seq)
    )
    """,
    f"""
    CREATE TABLE ring_no_answer (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        seq INTEGER NOT NULL,
        agent {_TEXT} NOT NULL,
        ring_s {_TIME} NOT NULL,
        at {_TIME} NOT NULL,
        PRIMARY KEY (site, call_id, seq)
    )
    """,
    f"""
    CREATE TABLE violations (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        rule {_TEXT} NOT NULL,
        kind {_TEXT} NOT NULL CHECK (kind IN ('violation', 'notice')),
        queue {_TEXT},
        agent {_TEXT},
        at {_TIME} NOT NULL,
        PRIMARY KEY (site, call_id, kind, rule)
    )
    """,
    # A QA tag is not part of the record: it survives re-writes of its call and goes only with
    # the call at retention. One tag per call and agent, since the rule counts calls.
    f"""
    CREATE TABLE complaints (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        agent {_TEXT} NOT NULL,
        tagged_at {_TIME} NOT NULL,
        tagged_by {_TEXT} NOT NULL,
        note TEXT NOT NULL,
        UNIQUE (site, call_id, agent)
    )
    """,
    # ``end`` is NULL while the interval is still open; (site, agent, queue, start) identifies an
    # interval so that closing it, or replaying it, updates the same row.
    f"""
    CREATE TABLE agent_states (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        site {_TEXT} NOT NULL,
        agent {_TEXT} NOT NULL,
        queue {_TEXT} NOT NULL,
        state {_TEXT} NOT NULL,
        reason {_TEXT},
        start {_TIME} NOT NULL,
        "end" {_TIME},
        UNIQUE (site, agent, queue, start)
    )
    """,
    f"""
    CREATE TABLE open_calls (
        site {_TEXT} NOT NULL,
        call_id {_TEXT} NOT NULL,
        arrived_at {_TIME} NOT NULL,
        last_seen {_TIME} NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (site, call_id)
    )
    """,
    # Reads across every site range on time alone; a bridge's own reads lead with its site.
    "CREATE INDEX calls_arrived ON calls (arrived_at)",
    "CREATE INDEX calls_site_arrived ON calls (site, arrived_at)",
    "CREATE INDEX calls_agent ON calls (site, agent, arrived_at)",
    "CREATE INDEX calls_queue ON calls (site, queue, arrived_at)",
    # (site, caller, arrived_at) serves both exact numbers and prefix ranges ("C" collation).
    "CREATE INDEX calls_caller ON calls (site, caller, arrived_at)",
    "CREATE INDEX calls_outcome ON calls (site, outcome, arrived_at)",
    "CREATE INDEX calls_service_day ON calls (site, service_day)",
    "CREATE INDEX violations_rule ON violations (site, rule, at)",
    "CREATE INDEX complaints_agent ON complaints (site, agent, tagged_at)",
    "CREATE INDEX complaints_tagged ON complaints (tagged_at)",
    "CREATE INDEX agent_states_start ON agent_states (start)",
    "CREATE INDEX agent_states_agent ON agent_states (site, agent, start)",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "calls with holds, transfers, ring-no-answers, violations; complaints, agent states, open calls; per site",
        _V1,
    ),
)
"""Every schema step, oldest first. Append only, in step with the SQLite schema's numbers."""

LATEST_VERSION: Final = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY NOT NULL,
        description TEXT NOT NULL,
        applied_at DOUBLE PRECISION NOT NULL
    )
"""


async def schema_version(conn: Any) -> int:
    """The version of a database (an asyncpg connection): 0 when it has no ``schema_version`` table yet."""
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NULL"):
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


async def apply_migrations(
    conn: Any,
    clock: Callable[[], float],
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    timeout_s: float = MIGRATION_TIMEOUT_S,
) -> int:
    """Bring the database up to the newest version, in one transaction.

    Args:
        conn: an asyncpg connection, not inside a transaction.
        clock: wall clock for ``applied_at``.
        migrations: the steps; the default is the real schema (tests pass others).
        timeout_s: how long waiting for another bridge's upgrade, or one statement of a step
            (an index on a large table), may take; the connection's own shorter lock and
            statement timeouts do not apply here.

    Returns:
        The schema version now.

    Raises:
        StoreError: the database was written by a newer pbx-bridge (its version is unknown here).
        asyncpg.PostgresError: a statement failed; nothing was changed.
    """
    check_migrations(migrations)
    latest = migrations[-1].version
    limit = str(max(int(timeout_s * 1000), 1))
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true)", limit
        )
        # Bridges starting together queue here; the lock ends with the transaction.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY, timeout=timeout_s)
        await conn.execute(_CREATE_VERSION_TABLE)
        current = await schema_version(conn)
        if current > latest:
            raise StoreError(
                f"the database has schema version {current}, newer than this pbx-bridge knows "
                f"(up to {latest}); upgrade pbx-bridge, or point the store at another database"
            )
        for step in migrations[current:]:
            for statement in step.statements:
                await conn.execute(statement, timeout=timeout_s)
            await conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
                step.version,
                step.description,
                clock(),
            )
    return latest
