"""Several bridges, one database: each site's calls are its own, and QA can read one site or all of them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest
from store_contract.helpers import submit_all

from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store import AgentStateInterval, CallFilter
from pbx_bridge.store.postgres import (
    ALL_SITES,
    PostgresStore,
    SiteAgentState,
    SiteComplaint,
    SiteUnansweredCall,
    redact_dsn,
)

from .pg_helpers import StoreFactory, count, fetch

pytestmark = pytest.mark.needs_postgres


def south_version(record: CallRecord) -> CallRecord:
    """The same call id at another PBX: a different call (another caller, ten minutes later)."""
    return dataclasses.replace(
        record,
        caller=f"9{record.caller or ''}",
        arrived_at=record.arrived_at + 600,
        ended_at=record.ended_at + 600,
        recording="south.wav",
    )


async def test_two_sites_writing_the_same_call_ids_do_not_clash(
    make_store: StoreFactory, busy_hour: list[CallRecord], pg_dsn: str, now: float
) -> None:
    """Both bridges run their writers at once on the same ids; each site keeps its own 50 calls and children."""
    north = await make_store(site="north")
    south = await make_store(site="south")
    south_calls = [south_version(r) for r in busy_hour]
    writers = [asyncio.create_task(s.run()) for s in (north, south)]
    try:
        submit_all(north, busy_hour)
        submit_all(south, south_calls)
        assert await north.flush(5.0)
        assert await south.flush(5.0)
    finally:
        for task in writers:
            task.cancel()
        for task in writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert await count(pg_dsn, "SELECT count(*) FROM calls") == 100
    assert await count(pg_dsn, "SELECT count(DISTINCT call_id) FROM calls") == 50
    holds = sum(len(r.holds) for r in busy_hour)
    assert await count(pg_dsn, "SELECT count(*) FROM holds WHERE site = 'south'") == holds
    assert await count(pg_dsn, "SELECT count(*) FROM holds WHERE site = 'north'") == holds
    for record, other in zip(busy_hour, south_calls, strict=True):
        got_north = await north.get_call(record.call_id)
        got_south = await south.get_call(record.call_id)
        assert got_north is not None and got_south is not None
        assert {k: v for k, v in got_north.items() if k != "complaints"} == record.to_dict()
        assert {k: v for k, v in got_south.items() if k != "complaints"} == other.to_dict()
        # Either bridge can read the other's call by naming its site.
        assert await north.get_call(record.call_id, site="south") == got_south
    assert await north.sites() == ["north", "south"]


async def test_reads_are_per_site_or_across_all(
    make_store: StoreFactory, busy_hour: list[CallRecord], now: float
) -> None:
    """By default a bridge reads its own site; site= reads another; ALL_SITES reads both and says where each is from."""
    north = await make_store(site="north")
    south = await make_store(site="south")
    south_calls = [south_version(r) for r in busy_hour[:10]]
    submit_all(north, busy_hour)
    submit_all(south, south_calls)
    assert await north.flush(5.0)
    assert await south.flush(5.0)

    assert (await north.list_calls(CallFilter()))[1] == 50
    assert (await south.list_calls(CallFilter()))[1] == 10
    assert (await north.list_calls(CallFilter(), site="south"))[1] == 10
    both, total = await north.list_calls(CallFilter(), limit=200, site=ALL_SITES)
    assert total == 60
    assert {c["site"] for c in both} == {"north", "south"}
    assert sorted((c["site"], c["call_id"]) for c in both) == sorted(
        [("north", r.call_id) for r in busy_hour] + [("south", r.call_id) for r in south_calls]
    )
    # Filters apply across sites too, and each filter on other tables stays within the call's site.
    south_only = CallFilter(caller=f"9{busy_hour[0].caller}")
    assert [(c["site"], c["call_id"]) for c in (await north.list_calls(south_only, site=ALL_SITES))[0]] == [
        ("south", busy_hour[0].call_id)
    ]
    with_transfer = [r for r in busy_hour[:10] if r.transfers]
    listed = (await south.list_calls(CallFilter(has_transfer=True), site=ALL_SITES, limit=200))[0]
    assert sum(1 for c in listed if c["site"] == "south") == len(with_transfer)

    start = min(r.arrived_at for r in busy_hour)
    end = max(r.arrived_at for r in busy_hour) + 3600
    assert len(await north.calls_between(start, end)) == 50
    assert all("site" not in c for c in await north.calls_between(start, end))
    spanning = await north.calls_between(start, end, site=ALL_SITES)
    assert len(spanning) == 60
    assert [c["arrived_at"] for c in spanning] == sorted(c["arrived_at"] for c in spanning)

    lost_north = await north.unanswered_callers(start)
    lost_all = await north.unanswered_callers(start, site=ALL_SITES)
    assert all(isinstance(u, SiteUnansweredCall) and u.site == "north" for u in lost_north)
    assert {u.site for u in lost_all} <= {"north", "south"}
    assert len(lost_all) == len(lost_north) + len(await south.unanswered_callers(start))
    reached_all = await north.reached_numbers(start, site=ALL_SITES)
    assert set(await north.reached_numbers(start)) | set(await south.reached_numbers(start)) == set(reached_all)

    with pytest.raises(ValueError, match="unique only within its site"):
        await north.get_call(busy_hour[0].call_id, site=ALL_SITES)


async def test_qa_tags_agent_states_and_markers_stay_with_their_site(
    make_store: StoreFactory, busy_hour: list[CallRecord], now: float
) -> None:
    """Complaints, agent states and open markers of one site are not seen, changed or purged by another."""
    north = await make_store(site="north")
    south = await make_store(site="south", retention_days=1)
    record = next(r for r in busy_hour if r.agent)
    submit_all(north, [record])
    submit_all(south, [south_version(record)])
    north.mark_open("live", now, {"at": "north"})
    south.mark_open("live", now - 10 * 86400, {"at": "south"})
    interval = AgentStateInterval("PJSIP/1001", "support", "available", None, now - 5 * 86400, None)
    await north.record_agent_state(interval)
    await south.record_agent_state(dataclasses.replace(interval, state="paused"))
    assert await north.flush(5.0)
    assert await south.flush(5.0)

    await north.add_complaint(record.call_id, None, "qa-north", "rude", tagged_at=now)
    await south.add_complaint(record.call_id, None, "qa-south", "late", tagged_at=now + 1)
    north_tags = await north.complaints_between(now - 1, now + 10)
    assert [(t.tagged_by, t.site) for t in north_tags if isinstance(t, SiteComplaint)] == [("qa-north", "north")]
    all_tags = await north.complaints_between(now - 1, now + 10, site=ALL_SITES)
    assert [(t.tagged_by, getattr(t, "site", None)) for t in all_tags] == [("qa-north", "north"), ("qa-south", "south")]
    assert all_tags[1].call_arrived_at == record.arrived_at + 600  # joined to the south call, not the north one
    got = await north.get_call(record.call_id)
    assert got is not None and [c["tagged_by"] for c in got["complaints"]] == ["qa-north"]
    assert await south.remove_complaint(record.call_id, record.agent or "")
    assert len(await north.complaints_between(now - 1, now + 10)) == 1

    states = await north.agent_states_between(now - 6 * 86400, now, site=ALL_SITES)
    assert sorted((s.state, s.site) for s in states if isinstance(s, SiteAgentState)) == [
        ("available", "north"),
        ("paused", "south"),
    ]
    assert [m.payload for m in await north.open_markers()] == [{"at": "north"}]
    assert [m.payload for m in await south.open_markers()] == [{"at": "south"}]

    # South keeps a day: its purge takes its own old marker and state, and nothing of north's.
    await south.purge(now)
    assert await south.open_markers() == []
    assert [m.payload for m in await north.open_markers()] == [{"at": "north"}]
    assert [s.state for s in await north.agent_states_between(now - 6 * 86400, now, site=ALL_SITES)] == ["available"]
    assert await north.get_call(record.call_id) is not None


async def test_site_names_are_checked_and_the_password_never_shows(pg_dsn: str) -> None:
    """A site that is empty, '*' or too long is refused; errors and logs name the server without the password."""
    for bad in ("", "*", "a*b", "x" * 65, "tab\there"):
        with pytest.raises(ValueError, match="site"):
            PostgresStore(pg_dsn, site=bad)
    assert redact_dsn("postgresql://qa:s3cret@db.example:5433/calls?sslmode=require") == (
        "postgresql://qa@db.example:5433/calls"
    )
    assert redact_dsn("host=db password=s3cret") == "postgresql"
    store = PostgresStore("postgresql://qa:s3cret@127.0.0.1:1/calls", site="north", connect_timeout_s=2.0)
    assert "s3cret" not in repr(store)
    with pytest.raises(Exception, match="cannot open the call store") as info:
        await store.open()
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1/calls (site north)" in str(info.value)
    await store.close()


async def test_site_is_in_every_key(pg_dsn: str, make_store: StoreFactory) -> None:
    """Every table of the schema leads its primary or unique key with the site."""
    await make_store()
    rows = await fetch(
        pg_dsn,
        """
        SELECT c.conrelid::regclass::text AS tab, a.attname AS first
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype IN ('p', 'u') AND c.connamespace = 'public'::regnamespace
        """,
    )
    keys: dict[str, set[str]] = {}
    for row in rows:
        keys.setdefault(row["tab"], set()).add(row["first"])
    assert keys.pop("schema_version") == {"version"}
    assert keys.pop("complaints") == {"id", "site"}
    assert keys.pop("agent_states") == {"id", "site"}
    for table in ("calls", "holds", "transfers", "ring_no_answer", "violations", "open_calls"):
        assert keys.pop(table) == {"site"}, table
    assert keys == {}
