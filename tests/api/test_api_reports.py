"""Scorecards, intervals, service levels and callbacks over the API agree with the stored records."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from api_support import SYNTHETIC_CALLBACK, Client, MakeClient, auth, by_caller

from pbx_bridge.config import ApiRole
from pbx_bridge.engine.model import CallRecord
from pbx_bridge.store import AgentStateInterval
from pbx_bridge.web.api import API

QA = auth(ApiRole.QA)
DAY = "2026-11-24"  # every capture ran on 23 Nov around 17:00 UTC: the 24th in Asia/Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _judged(r: CallRecord) -> bool:
    """Inbound, offered, answered in service hours, with a time to answer."""
    return (
        r.direction.value == "inbound"
        and r.offered_at is not None
        and r.outcome.value == "answered"
        and not r.after_hours
        and r.time_to_answer_s is not None
    )


def _expected_card(calls: list[CallRecord]) -> dict[str, Any]:
    """A scorecard recomputed straight from the records (thresholds of the default policy)."""
    judged = [r for r in calls if _judged(r)]
    within = [r for r in judged if math.ceil(round(r.time_to_answer_s or 0, 3) / 3.0) <= 3]
    return {
        "calls": len(calls),
        "inbound": sum(r.direction.value == "inbound" for r in calls),
        "outbound": sum(r.direction.value == "outbound" for r in calls),
        "answered": sum(r.outcome.value == "answered" for r in calls),
        "abandoned": sum(r.outcome.value == "abandoned" for r in calls),
        "answer_judged": len(judged),
        "within_rings": len(within),
        "within_rings_pct": round(100 * len(within) / len(judged), 1) if judged else None,
        "avg_time_to_answer_s": (
            round(sum(r.time_to_answer_s or 0 for r in judged) / len(judged), 3) if judged else None
        ),
        "holds": sum(len(r.holds) for r in calls),
        "holds_over_limit": sum(h.seconds > 60 for r in calls for h in r.holds),
        "unconfirmed_transfers": sum("transfer.unconfirmed" in r.violations for r in calls),
        "agent_hung_up_first": sum(
            r.hangup_by.value == "agent" and "hangup.agent_first" in r.violations for r in calls
        ),
        "over_talk_max": sum((r.talk_s or 0) > 300 for r in calls),
    }


async def _get(client: Client, path: str, **params: str) -> Any:
    resp = await client.get(path, params=params, headers=QA)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_agent_scorecards_agree_with_records(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Each agent's day scorecard equals the same numbers recomputed from that agent's records."""
    body = await _get(client, "/api/v1/scorecards", period="day", date=DAY, by="agent")
    assert body["period"]["first_day"] == body["period"]["last_day"] == DAY
    assert body["period"]["timezone"] == "Asia/Shanghai"
    cards = {card["key"]: card for card in body["items"]}
    groups: dict[str, list[CallRecord]] = defaultdict(list)
    for r in records:
        if r.agent is not None:
            groups[r.agent].append(r)
    assert set(cards) == set(groups)
    for agent, calls in groups.items():
        expected = _expected_card(calls)
        assert {k: cards[agent][k] for k in expected} == expected, agent
        # The engine's own verdict agrees: judged calls not within rings are answer.within_rings breaches.
        breaches = sum("answer.within_rings" in r.violations for r in calls)
        assert expected["answer_judged"] - expected["within_rings"] == breaches


async def test_queue_scorecards_agree_with_records(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Each queue's week scorecard equals its records recomputed; calls outside queues have key null."""
    body = await _get(client, "/api/v1/scorecards", period="week", date=DAY, by="queue")
    assert (body["period"]["first_day"], body["period"]["last_day"]) == ("2026-11-23", "2026-11-29")
    cards = {card["key"]: card for card in body["items"]}
    groups: dict[str | None, list[CallRecord]] = defaultdict(list)
    for r in records:
        groups[r.queue].append(r)
    assert set(cards) == set(groups)
    for queue, calls in groups.items():
        expected = _expected_card(calls)
        assert {k: cards[queue][k] for k in expected} == expected, queue
        assert cards[queue]["complaints_breached"] is None


async def test_scorecard_counts_match_call_lists(client: Client) -> None:
    """A scorecard's breach counts are the totals of /calls filtered by the agent and the rule."""
    body = await _get(client, "/api/v1/scorecards", period="month", date=DAY)
    for card in body["items"]:
        for field, rule in (
            ("unconfirmed_transfers", "transfer.unconfirmed"),
            ("agent_hung_up_first", "hangup.agent_first"),
            ("over_talk_max", "duration.over_max"),
        ):
            page = await _get(client, "/api/v1/calls", agent=card["key"], rule=rule, start=DAY, end=DAY)
            assert page["total"] == card[field], (card["key"], rule)


async def test_other_days_are_empty(client: Client) -> None:
    """A day without calls has no scorecards; the period is cut in local time."""
    body = await _get(client, "/api/v1/scorecards", date="2026-11-23")
    assert body["items"] == []
    assert body["period"]["start"] == "2026-11-22T16:00:00.000Z"


async def test_floor_time_from_agent_states(client: Client, now: float) -> None:
    """Logged-in and paused time come from agent-state intervals, by pause reason, over all queues."""
    store = client.server.app[API].store
    t = datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI).timestamp()
    for state in (
        AgentStateInterval("PJSIP/1001", "support", "available", None, t, t + 600),
        AgentStateInterval("PJSIP/1001", "sales", "available", None, t + 300, t + 900),  # overlaps: counted once
        AgentStateInterval("PJSIP/1001", "support", "paused", "lunch", t + 600, t + 1800),
        AgentStateInterval("PJSIP/1001", "support", "paused", None, t + 1800, t + 1900),
        AgentStateInterval("PJSIP/1001", "support", "logged_out", None, t + 1900, t + 9000),
    ):
        await store.record_agent_state(state)  # type: ignore[attr-defined]
    assert await store.flush()  # type: ignore[attr-defined]
    body = await _get(client, "/api/v1/scorecards", date=DAY)
    card = next(c for c in body["items"] if c["key"] == "PJSIP/1001")
    assert card["logged_in_s"] == 1900.0
    assert card["paused_s"] == 1300.0
    assert card["paused_by_reason"] == {"lunch": 1200.0, "unspecified": 100.0}
    queues = await _get(client, "/api/v1/scorecards", date=DAY, by="queue")
    support = next(c for c in queues["items"] if c["key"] == "support")
    assert support["logged_in_s"] == 1900.0 and support["paused_by_reason"] == {"lunch": 1200.0, "unspecified": 100.0}
    sales = next(c for c in queues["items"] if c["key"] == "sales")
    assert sales["logged_in_s"] == 600.0


async def test_intervals_agree_with_records(client: Client, records: tuple[CallRecord, ...]) -> None:
    """The half-hour report has 48 rows and each one counts the calls that arrived in it."""
    body = await _get(client, "/api/v1/intervals", date=DAY)
    rows = body["items"]
    assert len(rows) == 48 and rows[0]["label"] == "00:00" and rows[-1]["label"] == "23:30"
    assert {row["utc_offset"] for row in rows} == {"+0800"}
    expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    waits: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.direction.value != "inbound" or r.offered_at is None:
            continue
        local = datetime.fromtimestamp(r.arrived_at, SHANGHAI)
        label = f"{local.hour:02d}:{30 * (local.minute // 30):02d}"
        slot = expected[label]
        slot["offered"] += 1
        slot[r.outcome.value] += 1
        if r.outcome.value == "answered":
            slot["within_rings"] += (r.rings or 99) <= 3
            waits[label].append(r.time_to_answer_s or 0)
        elif r.abandoned_after_s is not None:
            waits[label].append(r.abandoned_after_s)
    assert sum(row["offered"] for row in rows) == sum(s["offered"] for s in expected.values()) > 0
    for row in rows:
        slot = expected.get(row["label"], {})
        for key in ("offered", "answered", "abandoned", "within_rings"):
            assert row[key] == slot.get(key, 0), (row["label"], key)
        spent = waits.get(row["label"])
        assert row["avg_wait_s"] == (round(sum(spent) / len(spent), 3) if spent else None)


async def test_intervals_of_one_queue(client: Client, records: tuple[CallRecord, ...]) -> None:
    """With queue= the half-hours count only that queue's calls."""
    body = await _get(client, "/api/v1/intervals", date=DAY, queue="qlocaln")
    assert sum(row["offered"] for row in body["items"]) == sum(
        r.queue == "qlocaln" and r.offered_at is not None for r in records
    )


async def test_service_level_formulas_agree_with_records(client: Client, records: tuple[CallRecord, ...]) -> None:
    """SL1–SL4 over the day equal the four formulas applied to the records by hand (T = 9 s)."""
    body = await _get(client, "/api/v1/service-level", start=DAY, end=DAY)
    assert body["threshold_s"] == 9.0
    offered = [r for r in records if r.direction.value == "inbound" and r.offered_at is not None]
    answered = [r for r in offered if r.outcome.value == "answered"]
    within = sum((r.rings or 99) <= 3 for r in answered)
    abandoned = [r for r in offered if r.outcome.value == "abandoned"]
    ab_within = sum((r.abandoned_after_s or 0) <= 9.0 for r in abandoned)
    a, b = len(answered), len(abandoned)
    expected = {
        "SL1": (within, a),
        "SL2": (within, a + b),
        "SL3": (within, a + b - ab_within),
        "SL4": (within + ab_within, a + b),
    }
    got = {level["id"]: (level["numerator"], level["denominator"]) for level in body["levels"]}
    assert got == expected
    for level in body["levels"]:
        assert level["percent"] == round(100 * level["numerator"] / level["denominator"], 1)
        assert "÷" in level["formula"]


async def test_service_level_of_one_queue(client: Client, records: tuple[CallRecord, ...]) -> None:
    """With queue= the service level counts only that queue's calls."""
    body = await _get(client, "/api/v1/service-level", start=DAY, end=DAY, queue="qlocaln")
    queue = [r for r in records if r.queue == "qlocaln" and r.offered_at is not None]
    assert body["answered"] + body["abandoned"] + body["unanswered"] == len(queue)


async def test_service_level_bad_range_is_400(client: Client) -> None:
    """An end before the start is refused naming end."""
    resp = await client.get("/api/v1/service-level", params={"start": "2026-11-24", "end": "2026-11-20"}, headers=QA)
    assert resp.status == 400 and (await resp.json())["parameter"] == "end"


async def test_bad_report_parameters_are_400(client: Client) -> None:
    """Report parameters are checked like the call filters, naming the parameter."""
    for path, params, parameter in (
        ("/api/v1/scorecards", {"period": "year"}, "period"),
        ("/api/v1/scorecards", {"date": "24/11/2026"}, "date"),
        ("/api/v1/scorecards", {"by": "team"}, "by"),
        ("/api/v1/intervals", {"date": "2026-02-30"}, "date"),
        ("/api/v1/callbacks", {"since": "soon"}, "since"),
    ):
        resp = await client.get(path, params=params, headers=QA)
        assert resp.status == 400, (path, params)
        assert (await resp.json())["parameter"] == parameter


def _expected_callbacks(records: tuple[CallRecord, ...]) -> set[str]:
    """Abandoned in-hours callers with no answered call on their number since."""
    out = set()
    for r in records:
        if r.direction.value != "inbound" or r.outcome.value not in ("abandoned", "unanswered") or not r.caller:
            continue
        reached = any(
            o.outcome.value == "answered"
            and (o.caller if o.direction.value == "inbound" else o.callee) == r.caller
            and (o.answered_at or o.arrived_at) >= r.arrived_at
            for o in records
        )
        if not reached:
            out.add(r.caller)
    return out


async def test_callbacks_list_callers_not_reached(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Callers who gave up are listed with a 72 h deadline, except one reached by an answered call back."""
    body = await _get(client, "/api/v1/callbacks")
    numbers = {item["number"] for item in body["items"]}
    assert numbers == _expected_callbacks(records)
    assert "5550104" not in numbers  # reached by the outbound call SYNTHETIC_CALLBACK
    assert SYNTHETIC_CALLBACK in {r.call_id for r in records}
    missed = by_caller(records, "5550103")
    item = next(i for i in body["items"] if i["number"] == "5550103")
    deadline = datetime.fromisoformat(item["deadline"].replace("Z", "+00:00")).timestamp()
    assert deadline == round(missed.ended_at + 72 * 3600, 3)
    assert item["rule"] == "callback.overdue" and item["overdue"] is False and body["overdue"] == 0


async def test_callbacks_become_overdue(make_client: MakeClient, records: tuple[CallRecord, ...], now: float) -> None:
    """Four days later every caller still not reached is overdue, and overdue=true lists them."""
    client = await make_client(clock=now + 4 * 86400)
    body = await _get(client, "/api/v1/callbacks", overdue="true")
    assert {item["number"] for item in body["items"]} == _expected_callbacks(records)
    assert all(item["overdue"] for item in body["items"]) and body["overdue"] == len(body["items"])
