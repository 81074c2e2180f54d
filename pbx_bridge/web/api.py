"""The QA API under ``/api/v1``: call records, exports, complaint tags and reports.

Every request but ``/openapi.json`` needs ``Authorization: Bearer <token>``; the token's role
(``settings.api``, compared in constant time) decides what it may do:

    role        aggregates (scorecards, intervals, service level)   records, exports, callbacks   complaint tags
    wallboard   yes (customer numbers masked)                      no (403)                      no (403)
    qa          yes                                                 yes                           yes
    admin       yes                                                 yes                           yes

With no tokens configured the API refuses everything (401, with a body saying how to configure
them): call data is never open by default. Every query goes through the store's API, which
binds every value as an SQL parameter. Operations and their parameters are declared once, in
:mod:`pbx_bridge.web.openapi`; a bad parameter is a 400 that names it.

:class:`QaQueries` gathers the data of each report from the store; ``pbx-bridge calls`` and
``pbx-bridge report`` use it too, so the command line shows the same numbers as the API.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final, Protocol, runtime_checkable

from aiohttp import web

from pbx_bridge import reports
from pbx_bridge.board import mask_number
from pbx_bridge.config import ApiRole, Settings
from pbx_bridge.engine.hours import ServiceCalendar
from pbx_bridge.engine.model import iso
from pbx_bridge.errors import ConfigError, StoreError
from pbx_bridge.export import to_csv
from pbx_bridge.store.model import AgentStateInterval, CallFilter, Complaint, UnansweredCall
from pbx_bridge.web.openapi import (
    API_PREFIX,
    OPERATIONS,
    ROLE_RIGHTS,
    BadParameter,
    Operation,
    Query,
    Right,
    call_filter,
    openapi_document,
    roles_with,
)

EXPORT_PAGE: Final = 1000
EXPORT_MAX_ROWS: Final = 50_000  # an export is built in memory; Excel itself stops at 1 048 576 rows
CALLBACK_LOOKBACK_S: Final = 30 * 86_400.0
NOTE_MAX: Final = 2000
_MASKED_KEYS: Final = frozenset({"caller", "callee", "number"})
# Excel runs a cell starting with one of these as a formula; caller names and numbers come from
# the caller's phone, so a crafted display name could run one on a QA workstation.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final = re.compile(r"[+-][\d\s().-]*")  # +8613800000000 stays a number


class ApiHost(Protocol):
    """What the API needs of the daemon (read-only properties: a Daemon fits, so does a test stub)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> object: ...


@runtime_checkable
class QaStore(Protocol):
    """The store's QA queries (both SqliteStore and PostgresStore have them)."""

    async def list_calls(
        self, f: CallFilter, limit: int = ..., offset: int = ...
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def get_call(self, call_id: str) -> dict[str, Any] | None: ...

    async def calls_between(self, start: float, end: float) -> list[dict[str, Any]]: ...

    async def add_complaint(
        self, call_id: str, agent: str | None, tagged_by: str, note: str, tagged_at: float | None = ...
    ) -> None: ...

    async def remove_complaint(self, call_id: str, agent: str) -> bool: ...

    async def complaints_between(self, start: float, end: float) -> list[Complaint]: ...

    async def agent_states_between(self, start: float, end: float) -> list[AgentStateInterval]: ...

    async def unanswered_callers(self, since: float) -> list[UnansweredCall]: ...

    async def reached_numbers(self, since: float) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class QaQueries:
    """The data behind each endpoint, read from the store (shared by the API and the CLI)."""

    store: QaStore
    settings: Settings
    clock: Callable[[], float] = time.time

    @property
    def calendar(self) -> ServiceCalendar:
        """The deployment's calendar: its time zone cuts days, weeks and months."""
        return self.settings.calendars.default

    def today(self) -> date:
        """Today's local date."""
        return self.calendar.service_day(self.clock())

    async def page(self, f: CallFilter, limit: int, offset: int) -> dict[str, Any]:
        """One page of matching calls, newest first."""
        items, total = await self.store.list_calls(f, limit, offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    async def export(self, f: CallFilter) -> tuple[list[dict[str, Any]], int]:
        """Every matching call (at most ``EXPORT_MAX_ROWS``), newest first, and how many match."""
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        total = 0
        while len(rows) < EXPORT_MAX_ROWS:
            page, total = await self.store.list_calls(f, EXPORT_PAGE, offset)
            for row in page:
                # A call stored between two pages shifts the later ones by one: skip the repeat.
                if row.get("call_id") not in seen:
                    seen.add(str(row.get("call_id")))
                    rows.append(row)
            offset += len(page)
            if len(page) < EXPORT_PAGE:
                break
        return rows[:EXPORT_MAX_ROWS], total

    async def detail(self, call_id: str) -> dict[str, Any] | None:
        """One call with its complaints, its timeline and links; None when unknown."""
        record = await self.store.get_call(call_id)
        if record is None:
            return None
        policy = self.settings.policies.for_queue(record.get("queue"))
        try:
            record["timeline"] = reports.timeline(record, policy)
        except (KeyError, ValueError, TypeError):
            record["timeline"] = []  # a row the engine of today cannot read: show the record anyway
        record["links"] = {
            "self": f"{API_PREFIX}/calls/{call_id}",
            # A URL under api.recordings_url, else the file as Asterisk named it (the recordings share).
            "recording": self.settings.api.recording_link(record.get("recording")),
        }
        return record

    async def scorecards(self, kind: reports.PeriodKind, day: date, by: reports.GroupBy) -> reports.ScorecardReport:
        """Scorecards of the day, week or month containing ``day``."""
        period = reports.period_of(kind, day, self.calendar)
        rows = await self.store.calls_between(period.start, period.end)
        months = period.months(self.calendar)
        complaints = await self.store.complaints_between(months[0][1], months[-1][2])
        states = await self.store.agent_states_between(period.start, period.end)
        call_queues: dict[str, str | None] = {}
        if by is reports.GroupBy.QUEUE:
            known = {str(row.get("call_id")) for row in rows}
            for complaint in complaints:
                if complaint.call_id not in known and complaint.call_id not in call_queues:
                    # A tag on a call from another period: its queue is needed to charge it.
                    other = await self.store.get_call(complaint.call_id)
                    if other is not None:
                        call_queues[complaint.call_id] = other.get("queue")
        return reports.scorecards(
            rows,
            by=by,
            period=period,
            policies=self.settings.policies,
            calendar=self.calendar,
            now=self.clock(),
            complaints=complaints,
            states=states,
            call_queues=call_queues,
        )

    async def intervals(self, day: date, queue: str | None) -> reports.IntervalReport:
        """The half-hour report of one local day."""
        calendar = self.settings.calendars.for_queue(queue)
        lo, hi = calendar.day_bounds(day)
        rows = await self.store.calls_between(lo, hi)
        return reports.interval_report(rows, day=day, calendar=calendar, policies=self.settings.policies, queue=queue)

    async def callbacks(self, since: float | None, overdue_only: bool) -> dict[str, Any]:
        """Callers to call back since ``since`` (default: 30 days ago)."""
        now = self.clock()
        start = now - CALLBACK_LOOKBACK_S if since is None else since
        unanswered = await self.store.unanswered_callers(start)
        reached = await self.store.reached_numbers(start)
        items = reports.callbacks_due(
            unanswered, reached, policies=self.settings.policies, now=now, overdue_only=overdue_only
        )
        return {
            "since": iso(start),
            "overdue": sum(item.overdue for item in items),
            "items": [item.to_dict() for item in items],
        }

    async def service_level(self, start: float, end: float, queue: str | None) -> reports.ServiceLevelReport:
        """SL1–SL4 of the calls that arrived in ``[start, end)``."""
        rows = await self.store.calls_between(start, end)
        return reports.service_level(rows, start=start, end=end, policies=self.settings.policies, queue=queue)

    def default_range(self, start: float | None, end: float | None) -> tuple[float, float]:
        """``start`` or today's first instant; ``end`` or today's last."""
        lo, hi = self.calendar.day_bounds(self.today())
        return (lo if start is None else start), (hi if end is None else end)


# -- the HTTP layer ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    """What a handler gets: the request, its checked parameters, the caller's role."""

    http: web.Request
    queries: QaQueries
    query: Query
    role: ApiRole | None


_Handler = Callable[[_Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    """Ends a request with a JSON error."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body.get("error", "refused"))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


API: Final = web.AppKey("pbx_bridge.api", QaQueries)


def _dumps(data: Any) -> str:
    # Chinese names stay readable in the JSON; NaN never reaches a client.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json(data: Any, role: ApiRole | None, status: int = 200) -> web.Response:
    if role is ApiRole.WALLBOARD:
        data = _masked(data)
    return web.json_response(data, status=status, dumps=_dumps)


def _masked(data: Any) -> Any:
    """``data`` with every customer number masked (the wallboard role never sees one whole)."""
    if isinstance(data, dict):
        return {
            k: (mask_number(v) if k in _MASKED_KEYS and isinstance(v, str) else _masked(v)) for k, v in data.items()
        }
    if isinstance(data, list):
        return [_masked(v) for v in data]
    return data


def _authorise(request: web.Request, settings: Settings, right: Right) -> ApiRole | None:
    """The caller's role, or a 401/403 refusal."""
    if right is Right.PUBLIC:
        return None
    api = settings.api
    challenge = {"WWW-Authenticate": 'Bearer realm="pbx-bridge"'}
    if not api.tokens:
        raise _Refused(
            401,
            {
                "error": "api not configured",
                "reason": "no API tokens are configured, so the API serves no data",
                "how": (
                    f"set the environment variable {api.tokens_env} (or the file named by api.tokens_file) "
                    "to 'role:token' entries separated by commas, e.g. 'qa:<16+ random characters>'; "
                    "roles: wallboard, qa, admin; then restart pbx-bridge"
                ),
            },
            challenge,
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _Refused(401, {"error": "unauthorized", "reason": "send 'Authorization: Bearer <token>'"}, challenge)
    role = api.role_for(token)
    if role is None:
        raise _Refused(
            401,
            {"error": "unauthorized", "reason": "unknown token"},
            {"WWW-Authenticate": 'Bearer realm="pbx-bridge", error="invalid_token"'},
        )
    if right not in ROLE_RIGHTS[role]:
        raise _Refused(
            403,
            {
                "error": "forbidden",
                "reason": f"the {role.value} role may not read or change this",
                "role": role.value,
                "allowed_roles": [r.value for r in roles_with(right)],
            },
        )
    return role


def _endpoint(op: Operation, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        queries = request.app[API]
        try:
            role = _authorise(request, queries.settings, op.right)
            raw = {name: request.query.getall(name) for name in request.query}
            raw.update({name: [value] for name, value in request.match_info.items()})
            query = Query(op.params, raw, queries.calendar)
            return await handler(_Request(request, queries, query, role))
        except _Refused as exc:
            return web.json_response(exc.body, status=exc.status, headers=exc.headers, dumps=_dumps)
        except BadParameter as exc:
            return web.json_response(exc.to_dict(), status=400, dumps=_dumps)
        except StoreError as exc:
            return web.json_response({"error": "store unavailable", "reason": str(exc)}, status=503, dumps=_dumps)

    handle.__name__ = op.operation_id
    return handle


def _attachment(body: bytes, content_type: str, name: str, total: int, sent: int) -> web.Response:
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Total-Count": str(total),
    }
    if sent < total:
        headers["X-Export-Truncated"] = f"{sent} of {total} calls; narrow the filter"
    return web.Response(body=body, headers={"Content-Type": content_type, **headers})


def _stamp(queries: QaQueries) -> str:
    return datetime.fromtimestamp(queries.clock(), queries.calendar.tz).strftime("%Y%m%d-%H%M%S")


def excel_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with text that Excel would run as a formula quoted by a leading apostrophe (OWASP)."""
    out = dict(row)
    for key, value in row.items():
        if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
            out[key] = "'" + value
    return out


async def _list_calls(req: _Request) -> web.StreamResponse:
    f = call_filter(req.query)
    page = await req.queries.page(f, req.query.integer("limit"), req.query.integer("offset"))
    return _json(page, req.role)


async def _export_csv(req: _Request) -> web.StreamResponse:
    rows, total = await req.queries.export(call_filter(req.query))
    # The BOM tells Excel the file is UTF-8, so Chinese names arrive intact.
    body = to_csv([excel_safe(row) for row in rows], bom=True).encode("utf-8")
    name = f"calls-{_stamp(req.queries)}.csv"
    return _attachment(body, "text/csv; charset=utf-8", name, total, len(rows))


async def _export_json(req: _Request) -> web.StreamResponse:
    rows, total = await req.queries.export(call_filter(req.query))
    name = f"calls-{_stamp(req.queries)}.json"
    return _attachment(_dumps(rows).encode("utf-8"), "application/json; charset=utf-8", name, total, len(rows))


def _call_id(req: _Request) -> str:
    call_id = req.query.text("call_id")
    if call_id is None:
        raise BadParameter("call_id", "is required")
    return call_id


async def _get_call(req: _Request) -> web.StreamResponse:
    call_id = _call_id(req)
    detail = await req.queries.detail(call_id)
    if detail is None:
        raise _Refused(404, {"error": "not found", "reason": f"no call {call_id!r} in the store"})
    return _json(detail, req.role)


async def _complaint_body(request: web.Request) -> tuple[str | None, str, str | None]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("body", 'must be a JSON object: {"agent": "PJSIP/1001", "note": "..."}') from None
    if not isinstance(body, dict):
        raise BadParameter("body", "must be a JSON object")
    unknown = sorted(set(body) - {"agent", "note", "tagged_by"})
    if unknown:
        raise BadParameter(unknown[0], "unknown field (the body takes agent, note, tagged_by)")
    note = body.get("note")
    if not isinstance(note, str) or not note.strip():
        raise BadParameter("note", "must be a non-empty string saying what the complaint is about")
    if len(note) > NOTE_MAX:
        raise BadParameter("note", f"is longer than {NOTE_MAX} characters")
    fields: dict[str, str | None] = {}
    for name in ("agent", "tagged_by"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 200):
            raise BadParameter(name, "must be a non-empty string of at most 200 characters")
        fields[name] = value.strip() if isinstance(value, str) else None
    return fields["agent"], note.strip(), fields["tagged_by"]


async def _add_complaint(req: _Request) -> web.StreamResponse:
    call_id = _call_id(req)
    agent, note, tagged_by = await _complaint_body(req.http)
    call = await req.queries.store.get_call(call_id)
    if call is None:
        raise _Refused(404, {"error": "not found", "reason": f"no call {call_id!r} in the store"})
    if agent is None and not call.get("agent"):
        raise BadParameter("agent", "the call has no agent: name the agent the complaint is about")
    role = req.role.value if req.role is not None else "api"
    await req.queries.store.add_complaint(call_id, agent, tagged_by or f"api:{role}", note)
    after = await req.queries.store.get_call(call_id)
    complaints = after.get("complaints", []) if after is not None else []
    return _json({"call_id": call_id, "complaints": complaints}, req.role, status=201)


async def _remove_complaint(req: _Request) -> web.StreamResponse:
    call_id = _call_id(req)
    agent = req.query.text("agent")
    if agent is None:
        raise BadParameter("agent", "is required")
    if not await req.queries.store.remove_complaint(call_id, agent):
        raise _Refused(404, {"error": "not found", "reason": f"no complaint on {call_id!r} against {agent!r}"})
    return web.Response(status=204)


async def _scorecards(req: _Request) -> web.StreamResponse:
    q = req.query
    kind = reports.PeriodKind(q.pick("period"))
    by = reports.GroupBy(q.pick("by"))
    report = await req.queries.scorecards(kind, q.day("date") or req.queries.today(), by)
    return _json(report.to_dict(), req.role)


async def _intervals(req: _Request) -> web.StreamResponse:
    q = req.query
    report = await req.queries.intervals(q.day("date") or req.queries.today(), q.text("queue"))
    return _json(report.to_dict(), req.role)


async def _callbacks(req: _Request) -> web.StreamResponse:
    q = req.query
    body = await req.queries.callbacks(q.time("since"), bool(q.flag("overdue")))
    return _json(body, req.role)


async def _service_level(req: _Request) -> web.StreamResponse:
    q = req.query
    start, end = req.queries.default_range(q.time("start"), q.time("end", end_of_day=True))
    if end < start:
        raise BadParameter("end", "is before start")
    report = await req.queries.service_level(start, end, q.text("queue"))
    return _json(report.to_dict(), req.role)


async def _openapi(req: _Request) -> web.StreamResponse:
    return _json(openapi_document(), None)


HANDLERS: Final[Mapping[str, _Handler]] = {
    "listCalls": _list_calls,
    "exportCallsCsv": _export_csv,
    "exportCallsJson": _export_json,
    "getCall": _get_call,
    "addComplaint": _add_complaint,
    "removeComplaint": _remove_complaint,
    "getScorecards": _scorecards,
    "getIntervals": _intervals,
    "getCallbacks": _callbacks,
    "getServiceLevel": _service_level,
    "getOpenApi": _openapi,
}


def register_api(app: web.Application, daemon: ApiHost) -> None:
    """Add the ``/api/v1`` routes (and ``/openapi.json``) to ``app``.

    Raises:
        ConfigError: the daemon's store has no QA queries.
    """
    store = daemon.store
    if not isinstance(store, QaStore):
        raise ConfigError(f"store.backend: {type(store).__name__} has no QA queries")
    clock = getattr(daemon, "clock", None)
    app[API] = QaQueries(store, daemon.settings, clock if callable(clock) else time.time)
    for op in OPERATIONS:
        app.router.add_route(op.method, op.route, _endpoint(op, HANDLERS[op.operation_id]))
    spec = next(op for op in OPERATIONS if op.operation_id == "getOpenApi")
    # Also at the root, where API tools look for it first.
    app.router.add_get("/openapi.json", _endpoint(replace(spec, path="/openapi.json"), _openapi))
