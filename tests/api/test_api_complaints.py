"""QA complaint tags over the API: set, read back, count toward agent.complaints, remove."""

from __future__ import annotations

from api_support import Client, auth

from pbx_bridge.config import ApiRole
from pbx_bridge.engine.model import CallRecord

QA = auth(ApiRole.QA)


def _answered(records: tuple[CallRecord, ...], agent: str) -> list[CallRecord]:
    return [r for r in records if r.agent == agent and r.outcome.value == "answered"]


async def _card(client: Client, agent: str) -> dict[str, object]:
    resp = await client.get("/api/v1/scorecards", params={"period": "month", "date": "2026-11-24"}, headers=QA)
    return next(card for card in (await resp.json())["items"] if card["key"] == agent)


async def test_tag_read_back_and_remove(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A tag defaults to the call's agent, shows in the detail, and DELETE with the agent's / removes it."""
    call = _answered(records, "PJSIP/1001")[0]
    resp = await client.post(f"/api/v1/calls/{call.call_id}/complaints", json={"note": "态度不好"}, headers=QA)
    assert resp.status == 201
    body = await resp.json()
    assert [(c["agent"], c["note"], c["tagged_by"]) for c in body["complaints"]] == [
        ("PJSIP/1001", "态度不好", "api:qa")
    ]
    detail = await (await client.get(f"/api/v1/calls/{call.call_id}", headers=QA)).json()
    assert [c["agent"] for c in detail["complaints"]] == ["PJSIP/1001"]
    resp = await client.delete(f"/api/v1/calls/{call.call_id}/complaints/PJSIP/1001", headers=QA)
    assert resp.status == 204
    resp = await client.delete(f"/api/v1/calls/{call.call_id}/complaints/PJSIP%2F1001", headers=QA)
    assert resp.status == 404


async def test_two_complaints_in_a_month_breach(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Two tagged calls in one calendar month breach agent.complaints on the agent's scorecard."""
    calls = _answered(records, "PJSIP/1002")[:2]
    first = calls[0].call_id
    await client.post(f"/api/v1/calls/{first}/complaints", json={"note": "hung up on me"}, headers=QA)
    card = await _card(client, "PJSIP/1002")
    assert (card["complaints"], card["complaints_in_month"], card["complaints_breached"]) == (1, 1, False)
    body = {"note": "rude", "agent": "PJSIP/1002", "tagged_by": "王质检"}
    resp = await client.post(f"/api/v1/calls/{calls[1].call_id}/complaints", json=body, headers=auth(ApiRole.ADMIN))
    assert resp.status == 201
    assert (await resp.json())["complaints"][0]["tagged_by"] == "王质检"
    card = await _card(client, "PJSIP/1002")
    assert (card["complaints"], card["complaints_limit"], card["complaints_breached"]) == (2, 2, True)


async def test_bad_complaint_bodies_are_400(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A body that is not JSON, lacks a note or carries unknown fields is refused naming the field."""
    url = f"/api/v1/calls/{records[0].call_id}/complaints"
    cases = [
        ({"data": b"not json", "headers": {**QA, "Content-Type": "application/json"}}, "body"),
        ({"json": ["note"], "headers": QA}, "body"),
        ({"json": {"agent": "PJSIP/1001"}, "headers": QA}, "note"),
        ({"json": {"note": "  "}, "headers": QA}, "note"),
        ({"json": {"note": "x", "agent": 5}, "headers": QA}, "agent"),
        ({"json": {"note": "x", "severity": "high"}, "headers": QA}, "severity"),
    ]
    for kwargs, parameter in cases:
        resp = await client.post(url, **kwargs)  # type: ignore[arg-type]
        assert resp.status == 400, kwargs
        assert (await resp.json())["parameter"] == parameter


async def test_complaint_on_unknown_call_is_404(client: Client) -> None:
    """Tagging a call that is not stored gives 404."""
    resp = await client.post("/api/v1/calls/nope.9/complaints", json={"note": "x"}, headers=QA)
    assert resp.status == 404


async def test_complaint_on_call_without_agent_needs_one(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A call nobody answered can only be tagged when the body names the agent."""
    call = next(r for r in records if r.agent is None)
    url = f"/api/v1/calls/{call.call_id}/complaints"
    resp = await client.post(url, json={"note": "nobody picked up"}, headers=QA)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "agent"
    resp = await client.post(url, json={"note": "nobody picked up", "agent": "PJSIP/1003"}, headers=QA)
    assert resp.status == 201
