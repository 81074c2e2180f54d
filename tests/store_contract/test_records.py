"""Calls in and out of the store, on every backend: exact round trip, replays, QA tags, open calls, retention, flush.

Each test runs against SQLite and against PostgreSQL (the ``backend`` fixture of this folder's conftest).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from structlog.testing import capture_logs

from pbx_bridge.engine.model import CallRecord, Direction, Outcome
from pbx_bridge.errors import StoreError
from pbx_bridge.store import AgentStateInterval, CallFilter

from .backends import Database, Store, StoreFactory
from .helpers import replay_capture, service_day, submit_all, wait_for

CHILD_TABLES = ("holds", "transfers", "ring_no_answer", "violations")


def without_complaints(stored: dict[str, object] | None) -> dict[str, object]:
    assert stored is not None
    return {k: v for k, v in stored.items() if k != "complaints"}


def expected_children(record: CallRecord) -> dict[str, int]:
    return {
        "holds": len(record.holds),
        "transfers": len(record.transfers),
        "ring_no_answer": len(record.ring_no_answer),
        "violations": len(set(record.violations)) + len(set(record.notices)),
    }


async def all_children(database: Database) -> dict[str, dict[str, int]]:
    """call id → child table → how many rows the call has there (calls without any are missing)."""
    found: dict[str, dict[str, int]] = {}
    for table in CHILD_TABLES:
        for row in await database.rows(table):
            per_table = found.setdefault(row["call_id"], dict.fromkeys(CHILD_TABLES, 0))
            per_table[table] += 1
    return found


def children_of(found: dict[str, dict[str, int]], call_id: str) -> dict[str, int]:
    return found.get(call_id, dict.fromkeys(CHILD_TABLES, 0))


async def test_busy_hour_round_trip(store: Store, busy_hour: list[CallRecord]) -> None:
    """Every call of the busy hour comes back exactly as its to_dict() contract, written in one batch."""
    submit_all(store, busy_hour)
    assert await store.flush(5.0)
    for record in busy_hour:
        assert without_complaints(await store.get_call(record.call_id)) == record.to_dict()
    start = min(r.arrived_at for r in busy_hour)
    end = max(r.arrived_at for r in busy_hour) + 1
    between = await store.calls_between(start, end)
    assert between == [r.to_dict() for r in sorted(busy_hour, key=lambda r: (r.arrived_at, r.call_id))]
    assert store.stats.written == 50
    assert store.stats.pending == 0
    assert store.stats.batches == 1


async def test_scalar_columns_and_child_rows_match_the_record(
    store: Store, busy_hour: list[CallRecord], database: Database
) -> None:
    """The columns QA queries use hold the record's values (times exact, not 4-byte floats), and each list its rows."""
    submit_all(store, busy_hour)
    await store.flush(5.0)
    rows = {row["call_id"]: row for row in await database.rows("calls")}
    assert len(rows) == 50
    for record in busy_hour:
        row = rows[record.call_id]
        doc = record.to_dict()
        for key in ("direction", "caller", "callee", "queue", "agent", "outcome", "rings", "talk_s", "hold_count"):
            assert row[key] == doc[key], key
        assert row["arrived_at"] == record.arrived_at
        assert row["ended_at"] == record.ended_at
        assert row["hold_total_s"] == pytest.approx(record.hold_total_s, abs=1e-3)
        assert bool(row["partial"]) is record.partial
        assert row["service_day"] == service_day(record)
    kinds: dict[str, dict[str, str]] = {}
    for row in await database.rows("violations"):
        kinds.setdefault(row["call_id"], {})[row["rule"]] = row["kind"]
    found = await all_children(database)
    for record in busy_hour:
        want = {**dict.fromkeys(record.violations, "violation"), **dict.fromkeys(record.notices, "notice")}
        assert kinds.get(record.call_id, {}) == want
        assert children_of(found, record.call_id) == expected_children(record)


async def test_chinese_names_survive(store: Store, utf8_calls: list[CallRecord], database: Database) -> None:
    """Chinese caller names are stored as text, not escapes, and return unchanged."""
    submit_all(store, utf8_calls)
    await store.flush(5.0)
    names = {r.caller_name for r in utf8_calls}
    assert {"张伟", "王芳", "李娜"} <= names
    calls = await database.rows("calls")
    stored = {row["caller_name"] for row in calls}
    raw = "".join(row["record_json"] for row in calls)
    assert stored == names
    assert "张伟" in raw
    for record in utf8_calls:
        assert without_complaints(await store.get_call(record.call_id)) == record.to_dict()


async def test_the_same_call_twice_is_stored_once(
    store: Store, busy_hour: list[CallRecord], database: Database
) -> None:
    """A replayed call, in the same batch or a later one, leaves one row and no duplicate children."""
    submit_all(store, busy_hour)
    submit_all(store, busy_hour)  # same batch: replaces itself in memory
    assert store.stats.pending == 50
    await store.flush(5.0)
    submit_all(store, busy_hour)  # later batch: upsert, children rebuilt
    await store.flush(5.0)
    assert await database.count("calls") == 50
    found = await all_children(database)
    for record in busy_hour:
        assert children_of(found, record.call_id) == expected_children(record)
    assert store.stats.written == 100


async def test_a_rewritten_call_replaces_its_children(
    store: Store, busy_hour: list[CallRecord], database: Database
) -> None:
    """A newer version of a call (fewer holds, no violations) leaves none of the old child rows."""
    rich = max(busy_hour, key=lambda r: len(r.holds) + len(r.transfers) + len(r.violations))
    assert rich.holds or rich.transfers
    store.submit(rich, service_day(rich))
    await store.flush(5.0)
    bare = dataclasses.replace(rich, holds=(), transfers=(), ring_no_answer=(), violations=(), notices=())
    store.submit(bare, service_day(bare))
    await store.flush(5.0)
    assert rich.call_id not in await all_children(database)
    assert without_complaints(await store.get_call(rich.call_id)) == bare.to_dict()


async def test_a_pending_call_is_found_before_it_is_written(store: Store, busy_hour: list[CallRecord]) -> None:
    """get_call sees a call still waiting in the batch."""
    record = busy_hour[0]
    store.submit(record, service_day(record))
    assert without_complaints(await store.get_call(record.call_id)) == record.to_dict()
    assert await store.get_call("no-such-call") is None


async def test_submit_checks_the_service_day(store: Store, busy_hour: list[CallRecord]) -> None:
    """A service day that is not YYYY-MM-DD is refused at submit."""
    for bad in ("23/11/2026", "20261123", ""):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            store.submit(busy_hour[0], bad)
    assert store.stats.pending == 0


async def test_close_writes_everything_pending(make_store: StoreFactory, busy_hour: list[CallRecord]) -> None:
    """Closing without a writer task still saves every submitted call; a closed store takes no call, nor reopens."""
    first = await make_store()
    submit_all(first, busy_hour)
    await first.close()
    with pytest.raises(StoreError, match="closed"):
        first.submit(busy_hour[0], service_day(busy_hour[0]))
    with pytest.raises(StoreError, match="closed"):
        await first.open()
    second = await make_store()
    calls, total = await second.list_calls(CallFilter(), limit=100)
    assert total == 50
    assert len(calls) == 50


async def test_cancelling_the_writer_flushes(
    make_store: StoreFactory, busy_hour: list[CallRecord], database: Database
) -> None:
    """Cancelling run() (SIGTERM) writes what is pending before the task ends."""
    store = await make_store(batch_interval_s=60.0)
    task = asyncio.create_task(store.run())
    await asyncio.sleep(0.01)
    submit_all(store, busy_hour)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await database.count("calls") == 50
    assert store.stats.pending == 0


async def test_writer_commits_in_batches(running: Store, busy_hour: list[CallRecord], database: Database) -> None:
    """The running writer commits submitted calls within a few batch intervals, in few batches; it runs only once."""
    submit_all(running, busy_hour)
    await wait_for(lambda: running.stats.written == 50)
    assert running.stats.batches <= 2
    assert await database.count("calls") == 50
    with pytest.raises(StoreError, match="already running"):
        await running.run()


async def test_overflow_is_counted_and_logged(make_store: StoreFactory, busy_hour: list[CallRecord]) -> None:
    """Past max_pending, new calls are dropped, counted and logged one by one as errors; replaced ones still fit."""
    store = await make_store(max_pending=10)
    with capture_logs() as logs:
        submit_all(store, busy_hour[:15])
        store.submit(busy_hour[3], service_day(busy_hour[3]))  # already pending: replaces, not dropped
        store.mark_open("live-1", 1.0, {})
        await store.record_agent_state(AgentStateInterval("PJSIP/1001", "support", "available", None, 1.0, 2.0))
    stats = store.stats
    assert stats.pending == 10
    assert stats.dropped == 7
    dropped = [e for e in logs if e["event"] == "store backlog full: write dropped"]
    assert [e["id"] for e in dropped[:5]] == [r.call_id for r in busy_hour[10:15]]
    assert {e["kind"] for e in dropped} == {"call", "open-call marker", "agent state"}
    assert all(e["log_level"] == "error" for e in dropped)
    assert await store.flush(5.0)
    store.submit(busy_hour[12], service_day(busy_hour[12]))  # room again once written
    assert store.stats.pending == 1


async def test_open_markers_survive_a_reopen(make_store: StoreFactory, busy_hour: list[CallRecord]) -> None:
    """Open-call markers written before a restart are read back after it; closed or stored ones are not."""
    first = await make_store()
    a, b, c, d = busy_hour[:4]
    first.mark_open(a.call_id, a.arrived_at, {"caller": a.caller, "名字": "张伟"})
    first.mark_open(b.call_id, b.arrived_at, {"caller": b.caller}, last_seen=b.arrived_at + 5)
    first.mark_open(c.call_id, c.arrived_at, {"caller": c.caller})
    first.mark_open(d.call_id, d.arrived_at, {"caller": d.caller})
    assert [m.call_id for m in await first.open_markers()] == sorted(
        (a.call_id, b.call_id, c.call_id, d.call_id), key={x.call_id: x.arrived_at for x in (a, b, c, d)}.__getitem__
    )
    await first.flush(5.0)
    first.mark_closed(c.call_id)
    first.submit(d, service_day(d))  # a stored call is no longer open
    await first.close()

    second = await make_store()
    markers = {m.call_id: m for m in await second.open_markers()}
    assert set(markers) == {a.call_id, b.call_id}
    assert markers[a.call_id].payload == {"caller": a.caller, "名字": "张伟"}
    assert markers[a.call_id].last_seen == a.arrived_at
    assert markers[b.call_id].last_seen == b.arrived_at + 5
    second.mark_closed(a.call_id)
    assert [m.call_id for m in await second.open_markers()] == [b.call_id]


async def test_before_write_runs_ahead_of_every_write_and_cannot_stop_the_writer(
    make_store: StoreFactory, busy_hour: list[CallRecord], database: Database
) -> None:
    """What ``before_write`` queues goes out with that very write; when it raises, the write still happens."""
    store = await make_store()
    calls = iter(busy_hour[:2])

    def add_marker() -> None:
        record = next(calls)
        store.mark_open(record.call_id, record.arrived_at, {"caller": record.caller})
        if record is busy_hour[1]:
            raise RuntimeError("a broken hook")

    store.before_write = add_marker
    assert await store.flush(5.0)
    assert [m.call_id for m in await store.open_markers()] == [busy_hour[0].call_id]
    store.submit(busy_hour[5], service_day(busy_hour[5]))
    assert await store.flush(5.0)
    assert {m.call_id for m in await store.open_markers()} == {busy_hour[0].call_id, busy_hour[1].call_id}
    assert await database.count("calls") == 1


async def test_complaints(store: Store, busy_hour: list[CallRecord], now: float) -> None:
    """QA tags attach to a call, name its agent by default, count once per call and survive a rewrite."""
    answered = [r for r in busy_hour if r.agent]
    first, second = answered[0], answered[1]
    submit_all(store, busy_hour)
    await store.flush(5.0)
    await store.add_complaint(first.call_id, None, "qa1", "rude", tagged_at=now)
    await store.add_complaint(first.call_id, None, "qa2", "very rude", tagged_at=now + 10)  # re-tag
    await store.add_complaint(second.call_id, "PJSIP/1004", "qa1", "transfer target", tagged_at=now + 20)
    got = await store.get_call(first.call_id)
    assert got is not None
    assert got["complaints"] == [
        {
            "call_id": first.call_id,
            "agent": first.agent,
            "tagged_at": got["complaints"][0]["tagged_at"],
            "tagged_by": "qa2",
            "note": "very rude",
        }
    ]
    tags = await store.complaints_between(now, now + 60)
    assert [(t.call_id, t.agent, t.tagged_at) for t in tags] == [
        (first.call_id, first.agent, now),
        (second.call_id, "PJSIP/1004", now + 20),
    ]
    assert tags[0].call_arrived_at == first.arrived_at
    assert await store.complaints_between(now + 1, now + 15) == []
    store.submit(first, service_day(first))  # a replay of the call keeps its tags
    await store.flush(5.0)
    assert len((await store.get_call(first.call_id) or {})["complaints"]) == 1
    assert await store.remove_complaint(second.call_id, "PJSIP/1004")
    assert not await store.remove_complaint(second.call_id, "PJSIP/1004")


async def test_complaint_errors(store: Store, busy_hour: list[CallRecord]) -> None:
    """A complaint on an unknown call, without an agent on an unanswered call, or without a tagger, is refused."""
    abandoned = next(r for r in busy_hour if r.agent is None)
    store.submit(abandoned, service_day(abandoned))
    with pytest.raises(StoreError, match="no call"):
        await store.add_complaint("nope", "PJSIP/1001", "qa1", "x")
    with pytest.raises(StoreError, match="no agent"):
        await store.add_complaint(abandoned.call_id, None, "qa1", "x")
    with pytest.raises(StoreError, match="who tagged"):
        await store.add_complaint(abandoned.call_id, "PJSIP/1001", "", "x")
    await store.add_complaint(abandoned.call_id, "PJSIP/1001", "qa1", "pending call, named agent")
    got = await store.get_call(abandoned.call_id)
    assert got is not None
    assert [c["agent"] for c in got["complaints"]] == ["PJSIP/1001"]
    # A refused complaint rolled back its transaction and left the writer usable.
    assert await store.flush(5.0)
    assert store.stats.write_errors == 0


async def test_agent_states(store: Store, now: float) -> None:
    """Intervals overlapping a window are returned; re-recording an open one closes it; none ends before it starts."""
    t = now
    await store.record_agent_state(AgentStateInterval("PJSIP/1001", "support", "available", None, t, t + 60))
    await store.record_agent_state(AgentStateInterval("PJSIP/1001", "support", "paused", "lunch", t + 60, None))
    await store.record_agent_state(AgentStateInterval("PJSIP/1002", "support", "logged_out", None, t - 600, t - 10))
    await store.flush(5.0)
    window = await store.agent_states_between(t, t + 3600)
    assert [(s.agent, s.state, s.end) for s in window] == [
        ("PJSIP/1001", "available", t + 60),
        ("PJSIP/1001", "paused", None),
    ]
    await store.record_agent_state(AgentStateInterval("PJSIP/1001", "support", "paused", "lunch", t + 60, t + 1800))
    await store.flush(5.0)
    assert await store.agent_states_between(t + 1800, t + 3600) == []
    everything = await store.agent_states_between(t - 3600, t + 3600)
    assert [s.reason for s in everything] == [None, None, "lunch"]
    with pytest.raises(ValueError, match="before start"):
        AgentStateInterval("PJSIP/1001", "support", "paused", None, t, t - 1)


async def test_retention_purge(
    make_store: StoreFactory, busy_hour: list[CallRecord], now: float, database: Database
) -> None:
    """Calls older than retention_days go with their children and tags (old states and markers too); newer ones stay."""
    store = await make_store(retention_days=30)
    old = [dataclasses.replace(r, arrived_at=r.arrived_at - 40 * 86400) for r in busy_hour[:10]]
    submit_all(store, old + busy_hour[10:])
    store.mark_open("stale-open", 1.0, {})
    await store.flush(5.0)
    await store.add_complaint(old[0].call_id, "PJSIP/1001", "qa", "old", tagged_at=now - 40 * 86400)
    await store.record_agent_state(AgentStateInterval("PJSIP/1001", "support", "available", None, 1.0, 2.0))
    await store.flush(5.0)
    assert await store.purge(now) == 10
    assert await database.count("calls") == 40
    found = await all_children(database)
    for record in old:
        assert await store.get_call(record.call_id) is None
        assert record.call_id not in found
    for table in ("complaints", "agent_states", "open_calls"):
        assert await database.count(table) == 0, table
    assert store.stats.purged == 10
    assert await store.purge(now) == 0


async def test_purge_runs_at_open(make_store: StoreFactory, busy_hour: list[CallRecord], now: float) -> None:
    """Opening the store applies retention with its clock."""
    first = await make_store()
    submit_all(first, busy_hour)
    await first.close()
    later = await make_store(clock=lambda: now + 366 * 86400)
    assert later.stats.purged == 50
    assert (await later.list_calls(CallFilter()))[1] == 0


async def test_unanswered_and_reached(store: Store, busy_hour: list[CallRecord]) -> None:
    """Unanswered inbound callers are listed; a later answered call either way marks the number reached."""
    unanswered = [r for r in busy_hour if r.direction is Direction.INBOUND and r.outcome is not Outcome.ANSWERED]
    assert unanswered
    lost = unanswered[0]
    assert lost.caller
    callback = dataclasses.replace(
        next(r for r in busy_hour if r.direction is Direction.OUTBOUND),
        call_id="callback-1",
        callee=lost.caller,
        arrived_at=lost.ended_at + 600,
        answered_at=lost.ended_at + 610,
        ended_at=lost.ended_at + 700,
    )
    submit_all(store, [*busy_hour, callback])
    await store.flush(5.0)
    since = min(r.arrived_at for r in busy_hour)
    listed = await store.unanswered_callers(since)
    in_order = sorted(unanswered, key=lambda r: (r.arrived_at, r.call_id))
    assert [u.call_id for u in listed] == [r.call_id for r in in_order]
    assert {u.outcome for u in listed} <= {Outcome.ABANDONED, Outcome.UNANSWERED, Outcome.NOT_OFFERED}
    reached = await store.reached_numbers(since)
    assert reached[lost.caller] == lost.ended_at + 610
    answered_in = [r for r in busy_hour if r.direction is Direction.INBOUND and r.outcome is Outcome.ANSWERED]
    assert all(r.caller in reached for r in answered_in)
    assert await store.unanswered_callers(max(r.arrived_at for r in busy_hour) + 1) == []


async def test_every_capture_round_trips(store: Store) -> None:
    """Records from several stories (transfers, pickup, recordings, restart) come back exact."""
    records = [r for name in ("k", "pickup", "mixmonitor", "restart", "ivr_abandon", "o") for r in replay_capture(name)]
    submit_all(store, records)
    await store.flush(5.0)
    for record in records:
        assert without_complaints(await store.get_call(record.call_id)) == record.to_dict()
