"""GET /calls, /calls/{id} and the exports: filters, pagination, detail, Excel-friendly CSV."""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from api_support import QUOTED_NAME, SYNTHETIC_PARTIAL, Client, MakeClient, api_settings, auth, dicts

from pbx_bridge.config import ApiRole
from pbx_bridge.engine.model import CallRecord
from pbx_bridge.export import CSV_COLUMNS
from pbx_bridge.web.api import API

QA = auth(ApiRole.QA)
Record = dict[str, Any]


async def ids(client: Client, query: dict[str, str]) -> tuple[set[str], int]:
    """The call ids one page of /calls returns (up to 1000), and the total."""
    resp = await client.get("/api/v1/calls", params={**query, "limit": "1000"}, headers=QA)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return {item["call_id"] for item in body["items"]}, body["total"]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


FILTERS: list[tuple[dict[str, str], Callable[[Record], bool]]] = [
    ({"queue": "qlocaln"}, lambda d: d["queue"] == "qlocaln"),
    ({"agent": "PJSIP/1002"}, lambda d: d["agent"] == "PJSIP/1002"),
    ({"outcome": "abandoned"}, lambda d: d["outcome"] == "abandoned"),
    ({"rule": "hold.too_long"}, lambda d: "hold.too_long" in d["violations"]),
    ({"rule": "duration.over_target"}, lambda d: "duration.over_target" in d["notices"]),
    ({"caller": "5550*"}, lambda d: (d["caller"] or "").startswith("5550")),
    ({"caller": "5551031"}, lambda d: d["caller"] == "5551031"),
    ({"talk_min": "60"}, lambda d: d["talk_s"] is not None and d["talk_s"] >= 60),
    ({"talk_max": "20"}, lambda d: d["talk_s"] is not None and d["talk_s"] <= 20),
    ({"has_hold": "true"}, lambda d: d["hold_count"] > 0),
    ({"has_hold": "false"}, lambda d: d["hold_count"] == 0),
    ({"has_transfer": "true"}, lambda d: bool(d["transfers"])),
    ({"has_transfer": "false"}, lambda d: not d["transfers"]),
    ({"direction": "outbound"}, lambda d: d["direction"] == "outbound"),
    ({"partial": "true"}, lambda d: d["partial"]),
    ({"partial": "false"}, lambda d: not d["partial"]),
    (
        {"start": "2026-11-23T16:50:00Z", "end": "1795453200"},
        lambda d: 1795452600 <= _epoch(d["arrived_at"]) < 1795453200,
    ),
    # Without an offset a time is the deployment's local time (Asia/Shanghai, UTC+8).
    ({"end": "2026-11-24T00:50:00"}, lambda d: _epoch(d["arrived_at"]) < 1795452600),
    (
        {"queue": "support", "outcome": "answered", "has_hold": "true"},
        lambda d: d["queue"] == "support" and d["outcome"] == "answered" and d["hold_count"] > 0,
    ),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[json.dumps(q) for q, _ in FILTERS])
async def test_filter_narrows_to_matching_records(
    client: Client, records: tuple[CallRecord, ...], query: dict[str, str], keep: Callable[[Record], bool]
) -> None:
    """Each filter returns exactly the calls whose record matches it, a non-empty strict subset."""
    expected = {d["call_id"] for d in dicts(records, keep)}
    got, total = await ids(client, query)
    assert got == expected
    assert total == len(expected)
    assert 0 < len(expected) < len(records)


async def test_no_filter_lists_every_call_newest_first(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Without filters the list holds every stored call, newest arrival first, as record dicts."""
    resp = await client.get("/api/v1/calls", params={"limit": "1000"}, headers=QA)
    body = await resp.json()
    assert body["total"] == len(records)
    assert body["limit"] == 1000 and body["offset"] == 0
    arrivals = [_epoch(item["arrived_at"]) for item in body["items"]]
    assert arrivals == sorted(arrivals, reverse=True)
    by_id = {r.call_id: r.to_dict() for r in records}
    assert all(item == by_id[item["call_id"]] for item in body["items"])


async def test_pages_cover_every_call_once(client: Client, records: tuple[CallRecord, ...]) -> None:
    """Walking the pages with limit and offset yields every call exactly once, in order."""
    seen: list[str] = []
    offset = 0
    while True:
        resp = await client.get("/api/v1/calls", params={"limit": "7", "offset": str(offset)}, headers=QA)
        body = await resp.json()
        assert body["total"] == len(records)
        assert len(body["items"]) <= 7
        if not body["items"]:
            break
        seen.extend(item["call_id"] for item in body["items"])
        offset += 7
    assert len(seen) == len(set(seen)) == len(records)


async def test_default_page_is_100(client: Client) -> None:
    """Without limit a page holds at most 100 calls."""
    resp = await client.get("/api/v1/calls", headers=QA)
    body = await resp.json()
    assert body["limit"] == 100 and len(body["items"]) == min(100, body["total"])


BAD: list[tuple[dict[str, str], str]] = [
    ({"limit": "1001"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"talk_min": "abc"}, "talk_min"),
    ({"talk_min": "nan"}, "talk_min"),
    ({"talk_min": "30", "talk_max": "10"}, "talk_max"),
    ({"outcome": "lost"}, "outcome"),
    ({"rule": "callback.overdue"}, "rule"),
    ({"direction": "sideways"}, "direction"),
    ({"has_hold": "maybe"}, "has_hold"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-11-24", "end": "2026-11-22"}, "end"),
    ({"caller": "55*5*"}, "caller"),
    ({"caller": "*"}, "caller"),
    ({"service_day": "2026-13-01"}, "service_day"),
    ({"queue": ""}, "queue"),
    ({"agnet": "PJSIP/1001"}, "agnet"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD, ids=[json.dumps(q) for q, _ in BAD])
async def test_bad_filter_is_400_naming_the_parameter(client: Client, query: dict[str, str], parameter: str) -> None:
    """A bad or unknown parameter is refused with 400 and a body naming it and saying why."""
    resp = await client.get("/api/v1/calls", params=query, headers=QA)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad parameter"
    assert body["parameter"] == parameter
    assert body["reason"]


async def test_repeated_parameter_is_400(client: Client) -> None:
    """A parameter given twice is refused rather than one value silently winning."""
    resp = await client.get("/api/v1/calls?queue=support&queue=sales", headers=QA)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "queue"


async def test_detail_has_an_ordered_timeline(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A call's detail is its record plus a time-ordered timeline with holds, transfers and breaches."""
    call = next(r for r in records if r.holds and r.transfers and r.violations)
    resp = await client.get(f"/api/v1/calls/{call.call_id}", headers=QA)
    assert resp.status == 200
    body = await resp.json()
    assert {k: body[k] for k in call.to_dict()} == call.to_dict()
    assert body["complaints"] == []
    events = [e["event"] for e in body["timeline"]]
    assert events[0] == "arrival" and "end" in events
    for needed in ("offer", "answer", "hold", "hold_end", "transfer", "violation"):
        assert needed in events
    assert {e["rule"] for e in body["timeline"] if e["event"] == "violation"} == set(call.violations)
    times = [_epoch(e["at"]) for e in body["timeline"]]
    assert times == sorted(times)
    assert body["links"]["self"] == f"/api/v1/calls/{call.call_id}"


async def test_detail_links_the_recording(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A recorded call's detail names its recording, in the links and as the timeline's last event."""
    call = next(r for r in records if r.recording)
    body = await (await client.get(f"/api/v1/calls/{call.call_id}", headers=QA)).json()
    assert body["links"]["recording"] == call.recording
    assert body["timeline"][-1] == {"at": body["ended_at"], "event": "recording", "file": call.recording}


async def test_recording_link_is_a_url_under_recordings_url(
    make_client: MakeClient, records: tuple[CallRecord, ...]
) -> None:
    """With api.recordings_url set, a recording under recordings_dir is linked as a URL (path quoted)."""
    call = next(r for r in records if r.recording)
    assert call.recording is not None and call.recording.startswith("/var/spool/asterisk/monitor/")
    settings = api_settings()
    settings = replace(settings, api=replace(settings.api, recordings_url="https://qa.example/rec/"))
    client = await make_client(settings)
    body = await (await client.get(f"/api/v1/calls/{call.call_id}", headers=QA)).json()
    relative = call.recording.removeprefix("/var/spool/asterisk/monitor/")
    assert body["links"]["recording"] == "https://qa.example/rec/" + urllib.parse.quote(relative)
    assert body["recording"] == call.recording  # the record itself keeps Asterisk's file name


async def test_unknown_call_is_404(client: Client) -> None:
    """Asking for a call that is not stored gives 404 with a JSON reason."""
    resp = await client.get("/api/v1/calls/nope.1", headers=QA)
    assert resp.status == 404
    assert "nope.1" in (await resp.json())["reason"]


async def test_csv_opens_in_excel_with_chinese_names(client: Client, records: tuple[CallRecord, ...]) -> None:
    """/calls.csv is a UTF-8 attachment with a BOM whose rows parse back to the records, names intact."""
    resp = await client.get("/api/v1/calls.csv", headers=QA)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "charset=utf-8" in resp.headers["Content-Type"]
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    raw = await resp.read()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with the BOM
    text = raw.decode("utf-8").removeprefix("\ufeff")
    assert "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(records) == int(resp.headers["X-Total-Count"])
    names = {row["caller_name"] for row in rows}
    assert {"张伟", "王芳", "李娜", QUOTED_NAME} <= names
    quoted = next(row for row in rows if row["call_id"] == SYNTHETIC_PARTIAL)
    assert quoted["partial"] == "true" and quoted["caller_name"] == QUOTED_NAME
    by_id = {r.call_id: r for r in records}
    for row in rows:
        record = by_id[row["call_id"]]
        assert row["caller"] == (record.caller or "")
        assert row["violations"] == ";".join(record.violations)


async def test_csv_export_applies_the_filters(client: Client, records: tuple[CallRecord, ...]) -> None:
    """The CSV export holds exactly the calls the same filters list."""
    query = {"queue": "qlocalopt"}
    resp = await client.get("/api/v1/calls.csv", params=query, headers=QA)
    text = (await resp.read()).decode("utf-8-sig")
    got = {row["call_id"] for row in csv.DictReader(io.StringIO(text, newline=""))}
    assert got == {d["call_id"] for d in dicts(records, lambda d: d["queue"] == "qlocalopt")}


async def test_json_export_is_the_record_list(client: Client, records: tuple[CallRecord, ...]) -> None:
    """/calls.json is an attachment holding the matching record dicts."""
    resp = await client.get("/api/v1/calls.json", params={"outcome": "abandoned"}, headers=QA)
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    body = json.loads(await resp.read())
    expected = {d["call_id"]: d for d in dicts(records, lambda d: d["outcome"] == "abandoned")}
    assert {d["call_id"]: d for d in body} == expected


async def test_export_refuses_bad_filters(client: Client) -> None:
    """The exports check their filters like the list does."""
    resp = await client.get("/api/v1/calls.csv", params={"talk_max": "-3"}, headers=QA)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "talk_max"


async def test_naive_utc_offset_times_agree(client: Client) -> None:
    """The same instant as ISO with Z, ISO with +08:00 and epoch seconds selects the same calls."""
    forms = [
        "2026-11-23T17:00:00Z",
        "2026-11-24T01:00:00+08:00",
        str(datetime(2026, 11, 23, 17, tzinfo=UTC).timestamp()),
    ]
    results = [await ids(client, {"start": form}) for form in forms]
    assert results[0] == results[1] == results[2]
    assert results[0][1] > 0


async def test_csv_defuses_formulas_from_caller_names(client: Client, records: tuple[CallRecord, ...]) -> None:
    """A caller name Excel would run as a formula is quoted in the CSV; a +86 number is left alone."""
    store = client.server.app[API].store
    evil = '=HYPERLINK("http://example.invalid","点我")'
    record = replace(records[0], call_id="synthetic.formula", caller="+8613800000000", caller_name=evil)
    store.submit(record, "2026-11-24")  # type: ignore[attr-defined]
    assert await store.flush()  # type: ignore[attr-defined]
    resp = await client.get("/api/v1/calls.csv", params={"caller": "+8613800000000"}, headers=QA)
    text = (await resp.read()).decode("utf-8-sig")
    [row] = list(csv.DictReader(io.StringIO(text, newline="")))
    assert row["caller_name"] == "'" + evil
    assert row["caller"] == "+8613800000000"
    body = await (await client.get("/api/v1/calls/synthetic.formula", headers=QA)).json()
    assert body["caller_name"] == evil  # only the spreadsheet export is defused
