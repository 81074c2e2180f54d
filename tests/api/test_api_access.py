"""Who may do what: bearer tokens, roles, and an API closed until tokens are configured."""

from __future__ import annotations

import pytest
from api_support import TOKENS, Client, MakeClient, api_settings, auth

from pbx_bridge.config import ApiRole
from pbx_bridge.engine.model import CallRecord

AGGREGATES = ["/api/v1/scorecards", "/api/v1/intervals", "/api/v1/service-level"]
RECORDS = ["/api/v1/calls", "/api/v1/calls.csv", "/api/v1/calls.json", "/api/v1/callbacks"]


def _detail(records: tuple[CallRecord, ...]) -> str:
    return f"/api/v1/calls/{records[0].call_id}"


@pytest.mark.parametrize("path", AGGREGATES + RECORDS)
async def test_no_token_is_401(client: Client, path: str) -> None:
    """A request without a token is refused with 401, a JSON reason and a Bearer challenge."""
    resp = await client.get(path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["error"] == "unauthorized" and "Bearer" in body["reason"]


@pytest.mark.parametrize("header", ["Bearer not-a-known-token-at-all", f"Basic {TOKENS[ApiRole.QA]}", "Bearer "])
async def test_unknown_or_malformed_token_is_401(client: Client, header: str) -> None:
    """An unknown token, another scheme or an empty token is refused with 401."""
    resp = await client.get("/api/v1/scorecards", headers={"Authorization": header})
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"


async def test_authorization_scheme_is_case_insensitive(client: Client) -> None:
    """'bearer' in lower case is accepted, as RFC 6750 allows."""
    resp = await client.get("/api/v1/scorecards", headers={"Authorization": f"bearer {TOKENS[ApiRole.QA]}"})
    assert resp.status == 200


async def test_wallboard_cannot_read_records_or_export(client: Client, records: tuple[CallRecord, ...]) -> None:
    """The wallboard role gets 403 on records, exports, callbacks and complaint tags."""
    headers = auth(ApiRole.WALLBOARD)
    for path in [*RECORDS, _detail(records)]:
        resp = await client.get(path, headers=headers)
        assert resp.status == 403, path
        body = await resp.json()
        assert body["error"] == "forbidden" and body["role"] == "wallboard"
        assert body["allowed_roles"] == ["qa", "admin"]
    call = records[0].call_id
    resp = await client.post(f"/api/v1/calls/{call}/complaints", json={"note": "rude"}, headers=headers)
    assert resp.status == 403
    resp = await client.delete(f"/api/v1/calls/{call}/complaints/PJSIP/1001", headers=headers)
    assert resp.status == 403


async def test_wallboard_reads_aggregates_without_numbers(client: Client, records: tuple[CallRecord, ...]) -> None:
    """The wallboard role reads scorecards, intervals and service levels, none holding a customer number."""
    numbers = {n for r in records for n in (r.caller, r.callee) if n and len(n) >= 7}
    day = {"date": "2026-11-24"}
    requests = [
        ("/api/v1/scorecards", day),
        ("/api/v1/scorecards", {**day, "by": "queue", "period": "week"}),
        ("/api/v1/intervals", day),
        ("/api/v1/intervals", {**day, "queue": "support"}),
        ("/api/v1/service-level", {"start": "2026-11-24", "end": "2026-11-24"}),
    ]
    for path, params in requests:
        resp = await client.get(path, params=params, headers=auth(ApiRole.WALLBOARD))
        assert resp.status == 200, path
        body = await resp.json()
        assert body["items"] if "items" in body else body["answered"], path
        text = await resp.text()
        assert not any(number in text for number in numbers), path


@pytest.mark.parametrize("role", [ApiRole.QA, ApiRole.ADMIN])
async def test_qa_and_admin_read_everything(client: Client, records: tuple[CallRecord, ...], role: ApiRole) -> None:
    """The qa and admin roles read records, exports, callbacks and aggregates."""
    for path in [*AGGREGATES, *RECORDS, _detail(records)]:
        resp = await client.get(path, headers=auth(role))
        assert resp.status == 200, path


async def test_no_tokens_configured_closes_the_api(make_client: MakeClient, records: tuple[CallRecord, ...]) -> None:
    """With no tokens configured every data route is 401 with a body saying how to configure tokens."""
    client = await make_client(api_settings(tokens=False))
    for path in [*AGGREGATES, *RECORDS, _detail(records)]:
        resp = await client.get(path, headers=auth(ApiRole.ADMIN))
        assert resp.status == 401, path
        body = await resp.json()
        assert body["error"] == "api not configured"
        assert "PBX_BRIDGE_API_TOKENS" in body["how"] and "qa:" in body["how"]
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200


async def test_openapi_needs_no_token(client: Client) -> None:
    """The API description is public, at /api/v1/openapi.json and /openapi.json."""
    for path in ("/api/v1/openapi.json", "/openapi.json"):
        resp = await client.get(path)
        assert resp.status == 200
        assert (await resp.json())["openapi"] == "3.1.0"


async def test_auth_is_checked_before_parameters(client: Client) -> None:
    """A bad parameter without a token is a 401, so parameter errors reveal nothing to strangers."""
    resp = await client.get("/api/v1/calls", params={"talk_min": "abc"})
    assert resp.status == 401
