"""QA queries, on every backend: each filter narrows to exactly the calls it names; pages add up to the total.

Each test that takes a store runs against SQLite and against PostgreSQL (this folder's ``backend`` fixture);
the checks of :class:`CallFilter` itself need no store and run once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pbx_bridge.engine.model import CallRecord, Direction, Outcome
from pbx_bridge.store import CallFilter

from .backends import Store, StoreFactory
from .helpers import service_day, submit_all

Check = Callable[[CallRecord], bool]


@pytest.fixture
async def loaded(make_store: StoreFactory, busy_hour: list[CallRecord]) -> AsyncIterator[Store]:
    """A store holding the busy hour."""
    store = await make_store()
    submit_all(store, busy_hour)
    assert await store.flush(5.0)
    yield store


def newest_first(records: list[CallRecord]) -> list[str]:
    return [r.call_id for r in sorted(records, key=lambda r: (r.arrived_at, r.call_id), reverse=True)]


async def ids(store: Store, f: CallFilter) -> tuple[list[str], int]:
    calls, total = await store.list_calls(f, limit=1000)
    return [c["call_id"] for c in calls], total


def cases(busy: list[CallRecord]) -> list[tuple[str, CallFilter, Check]]:
    mid = sorted(r.arrived_at for r in busy)[len(busy) // 2]
    first = min(r.arrived_at for r in busy)
    agent = next(r.agent for r in busy if r.agent)
    caller = busy[7].caller or ""
    answered = [r.talk_s for r in busy if r.talk_s is not None]
    talk_lo, talk_hi = sorted(answered)[10], sorted(answered)[30]
    return [
        ("start", CallFilter(start=mid), lambda r: r.arrived_at >= mid),
        ("end", CallFilter(end=mid), lambda r: r.arrived_at < mid),
        ("range", CallFilter(start=first + 60, end=mid), lambda r: first + 60 <= r.arrived_at < mid),
        ("queue", CallFilter(queue="support"), lambda r: r.queue == "support"),
        ("agent", CallFilter(agent=agent), lambda r: r.agent == agent),
        ("outcome", CallFilter(outcome=Outcome.ABANDONED), lambda r: r.outcome is Outcome.ABANDONED),
        ("rule", CallFilter(rule="hangup.agent_first"), lambda r: "hangup.agent_first" in r.violations),
        ("notice", CallFilter(rule="duration.over_target"), lambda r: "duration.over_target" in r.notices),
        ("caller", CallFilter(caller=caller), lambda r: r.caller == caller),
        ("caller prefix", CallFilter(caller="555021*"), lambda r: (r.caller or "").startswith("555021")),
        ("talk_min", CallFilter(talk_min=talk_lo), lambda r: r.talk_s is not None and round(r.talk_s, 3) >= talk_lo),
        ("talk_max", CallFilter(talk_max=talk_hi), lambda r: r.talk_s is not None and round(r.talk_s, 3) <= talk_hi),
        ("has_hold", CallFilter(has_hold=True), lambda r: bool(r.holds)),
        ("no hold", CallFilter(has_hold=False), lambda r: not r.holds),
        ("has_transfer", CallFilter(has_transfer=True), lambda r: bool(r.transfers)),
        ("no transfer", CallFilter(has_transfer=False), lambda r: not r.transfers),
        ("direction", CallFilter(direction=Direction.OUTBOUND), lambda r: r.direction is Direction.OUTBOUND),
        ("partial", CallFilter(partial=False), lambda r: not r.partial),
        ("service_day", CallFilter(service_day=service_day(busy[0])), lambda r: service_day(r) == service_day(busy[0])),
        (
            "combined",
            CallFilter(queue="support", outcome=Outcome.ANSWERED, has_hold=True, start=first),
            lambda r: r.queue == "support" and r.outcome is Outcome.ANSWERED and bool(r.holds),
        ),
    ]


async def test_each_filter_narrows_exactly(loaded: Store, busy_hour: list[CallRecord]) -> None:
    """Every filter returns exactly the calls the same test in Python picks, newest first, with the right total."""
    for name, f, check in cases(busy_hour):
        want = newest_first([r for r in busy_hour if check(r)])
        got, total = await ids(loaded, f)
        assert got == want, name
        assert total == len(want), name
        assert total > 0, f"{name}: the capture should have calls matching this filter"
        if name not in ("no hold", "no transfer", "partial", "service_day", "queue"):
            assert total < 50, f"{name}: the filter should narrow the busy hour"


async def test_no_filter_returns_everything(loaded: Store, busy_hour: list[CallRecord]) -> None:
    """An empty filter lists every call, newest first."""
    assert await ids(loaded, CallFilter()) == (newest_first(busy_hour), 50)


async def test_filters_that_match_nothing(loaded: Store) -> None:
    """A filter nothing matches gives an empty page and a zero total."""
    for f in (
        CallFilter(agent="PJSIP/9999"),
        CallFilter(caller="999*"),
        CallFilter(rule="transfer.lost", has_transfer=False),
    ):
        assert await ids(loaded, f) == ([], 0)


async def test_caller_prefix_is_not_a_like_pattern(make_store: StoreFactory, busy_hour: list[CallRecord]) -> None:
    """'%' and '_' in a prefix are literal characters, not wildcards; a prefix ending in U+10FFFF still works."""
    store = await make_store()
    odd = dataclasses.replace(busy_hour[0], call_id="odd", caller="55_0%1")
    plain = dataclasses.replace(busy_hour[1], call_id="plain", caller="5510012")
    top = dataclasses.replace(busy_hour[2], call_id="top", caller="\U0010ffff7")
    submit_all(store, [odd, plain, top])
    await store.flush(5.0)
    assert await ids(store, CallFilter(caller="55_*")) == (["odd"], 1)
    assert await ids(store, CallFilter(caller="55_0%1")) == (["odd"], 1)
    assert await ids(store, CallFilter(caller="\U0010ffff*")) == (["top"], 1)


async def test_pagination(loaded: Store, busy_hour: list[CallRecord]) -> None:
    """Pages of 7 cover every call once, in order; the total stays the same; past the end is empty."""
    seen: list[str] = []
    for offset in range(0, 56, 7):
        calls, total = await loaded.list_calls(CallFilter(), limit=7, offset=offset)
        assert total == 50
        assert len(calls) == min(7, 50 - offset)
        seen.extend(c["call_id"] for c in calls)
    assert seen == newest_first(busy_hour)
    assert await loaded.list_calls(CallFilter(), limit=7, offset=500) == ([], 50)
    abandoned = CallFilter(outcome=Outcome.ABANDONED)
    page, total = await loaded.list_calls(abandoned, limit=3, offset=3)
    assert (len(page), total) == (1, 4)
    with pytest.raises(ValueError, match="limit"):
        await loaded.list_calls(CallFilter(), limit=0)
    with pytest.raises(ValueError, match="offset"):
        await loaded.list_calls(CallFilter(), limit=5, offset=-1)


async def test_listed_records_are_the_contract(loaded: Store, busy_hour: list[CallRecord]) -> None:
    """list_calls returns the stored to_dict() documents."""
    calls, _ = await loaded.list_calls(CallFilter(has_transfer=True), limit=100)
    by_id = {r.call_id: r for r in busy_hour}
    assert calls
    for call in calls:
        assert call == by_id[call["call_id"]].to_dict()


async def test_values_are_parameters_not_sql(loaded: Store) -> None:
    """Quotes and SQL in filter values are matched as text: nothing is ever spliced into a statement."""
    for hostile in ("x' OR '1'='1", "'; DROP TABLE calls; --", "$1", "?"):
        assert await ids(loaded, CallFilter(agent=hostile, queue=hostile)) == ([], 0)
        assert await ids(loaded, CallFilter(caller=hostile + "*")) == ([], 0)
        assert await loaded.get_call(hostile) is None
    assert (await ids(loaded, CallFilter()))[1] == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 10.0, "end": 5.0}, "before start"),
        ({"talk_min": 10.0, "talk_max": 5.0}, "below talk_min"),
        ({"rule": "no.such.rule"}, "not a per-call rule"),
        ({"rule": "callback.overdue"}, "not a per-call rule"),
        ({"caller": "*"}, "prefix"),
        ({"caller": "55*5*"}, "prefix"),
        ({"service_day": "yesterday"}, "YYYY-MM-DD"),
    ],
)
def test_bad_filters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """A filter that can match nothing by construction is a ValueError naming the field (no store: runs once)."""
    with pytest.raises(ValueError, match=message):
        CallFilter(**kwargs)
