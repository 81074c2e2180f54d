"""The QA API's contract as data: operations, parameters, rights, schemas and the OpenAPI document.

Pure: no aiohttp. The route table in ``api.py``, the parameter checks of every request, the
``pbx-bridge calls`` options and ``/openapi.json`` are all read from :data:`OPERATIONS`, so the
document cannot drift from what the server accepts.

Parameter parsing (:class:`Query`) turns raw strings into typed values and raises
:class:`BadParameter` naming the parameter; an unknown parameter is refused rather than
ignored, so a typo (``?agnet=``) never silently returns every call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Final

from pbx_bridge import __version__
from pbx_bridge.config import ApiRole
from pbx_bridge.engine import rules
from pbx_bridge.engine.hours import ServiceCalendar
from pbx_bridge.engine.model import Direction, Outcome
from pbx_bridge.store.model import CallFilter

API_PREFIX: Final = "/api/v1"
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
_EPOCH_RE: Final = re.compile(r"\d{1,11}(\.\d{1,9})?")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


class BadParameter(ValueError):
    """A request parameter (or body field) is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """The 400 body."""
        return {"error": "bad parameter", "parameter": self.parameter, "reason": self.reason}


class Right(StrEnum):
    """What an operation needs."""

    PUBLIC = "public"  # the API description only
    AGGREGATES = "aggregates"  # counts and percentages, no customer numbers
    RECORDS = "records"  # call records, exports, callers to call back
    TAG = "tag"  # set and remove complaint tags


ROLE_RIGHTS: Final[Mapping[ApiRole, frozenset[Right]]] = {
    ApiRole.WALLBOARD: frozenset({Right.AGGREGATES}),
    ApiRole.QA: frozenset({Right.AGGREGATES, Right.RECORDS, Right.TAG}),
    ApiRole.ADMIN: frozenset(Right),
}


def roles_with(right: Right) -> tuple[ApiRole, ...]:
    """The roles that hold ``right``."""
    return tuple(role for role in ApiRole if right in ROLE_RIGHTS[role])


class Kind(StrEnum):
    """How a parameter's text is read."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIME = "time"  # ISO 8601 (offset optional: local time) or epoch seconds; a bare date is a whole day
    DATE = "date"  # YYYY-MM-DD, a local date
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class Param:
    """One query or path parameter."""

    name: str
    kind: Kind
    description: str
    choices: tuple[str, ...] = ()
    default: str | int | float | bool | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    where: str = "query"

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON schema."""
        out: dict[str, Any]
        if self.kind is Kind.TIME:
            out = {
                "oneOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "string", "format": "date"},
                    {"type": "number", "minimum": 0},
                ]
            }
        elif self.kind is Kind.DATE:
            out = {"type": "string", "format": "date"}
        elif self.kind is Kind.CHOICE:
            out = {"type": "string", "enum": list(self.choices)}
        else:
            out = {"type": self.kind.value}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.default is not None:
            out["default"] = self.default
        return out

    def to_openapi(self) -> dict[str, Any]:
        """The OpenAPI Parameter Object."""
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "description": self.description,
            "schema": self.schema(),
        }


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint: method, path under ``/api/v1``, what it needs and what it takes."""

    operation_id: str
    method: str
    path: str
    summary: str
    right: Right
    params: tuple[Param, ...] = ()
    body: str | None = None  # schema name of the JSON body
    response: str | None = None  # schema name of the JSON answer
    media: str = "application/json"
    status: int = 200
    errors: tuple[int, ...] = (400, 401, 403, 503)

    @property
    def route(self) -> str:
        """The aiohttp route (path parameters that may hold a ``/`` take the rest of the path)."""
        path = API_PREFIX + self.path
        return path.replace("{agent}", "{agent:.+}")


# -- reading parameters --------------------------------------------------------------------------------


class Query:
    """The parameters of one request, checked against an operation's declaration.

    Args:
        params: the operation's parameters (query and path).
        raw: name → values as given (a query string may repeat a name).
        calendar: the deployment's calendar: local times and dates are read in its zone.

    Raises:
        BadParameter: an unknown or repeated parameter.
    """

    def __init__(self, params: Iterable[Param], raw: Mapping[str, list[str]], calendar: ServiceCalendar) -> None:
        self._spec = {p.name: p for p in params}
        self._calendar = calendar
        for name, values in raw.items():
            if name not in self._spec:
                known = ", ".join(sorted(self._spec)) or "none"
                raise BadParameter(name, f"unknown parameter (this endpoint takes: {known})")
            if len(values) > 1:
                raise BadParameter(name, "given more than once")
        self._raw = {name: values[0] for name, values in raw.items()}

    def _text(self, name: str) -> str | None:
        if name not in self._spec:
            raise KeyError(name)  # a programming error: the handler reads an undeclared parameter
        value = self._raw.get(name)
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise BadParameter(name, "is empty; leave it out to not filter on it")
        return value

    def text(self, name: str) -> str | None:
        """A string parameter, or None when absent."""
        value = self._text(name)
        if value is not None and len(value) > 200:
            raise BadParameter(name, "is longer than 200 characters")
        return value

    def choice(self, name: str) -> str | None:
        """One of the declared choices, or the default, or None."""
        value = self._text(name)
        spec = self._spec[name]
        if value is None:
            return None if spec.default is None else str(spec.default)
        if value not in spec.choices:
            raise BadParameter(name, f"must be one of {', '.join(spec.choices)}, got {value!r}")
        return value

    def pick(self, name: str) -> str:
        """One of the declared choices, or the declared default."""
        value = self.choice(name)
        if value is None:
            raise BadParameter(name, f"is required: one of {', '.join(self._spec[name].choices)}")
        return value

    def number(self, name: str) -> float | None:
        """A finite number within the declared bounds, or None."""
        value = self._text(name)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise BadParameter(name, f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise BadParameter(name, f"must be a finite number, got {value!r}")
        return self._bounded(name, number)

    def integer(self, name: str) -> int:
        """An integer within the declared bounds, or the default."""
        value = self._text(name)
        spec = self._spec[name]
        if value is None:
            if not isinstance(spec.default, int):
                raise BadParameter(name, "is required")
            return spec.default
        if not re.fullmatch(r"-?\d{1,12}", value):
            raise BadParameter(name, f"must be a whole number, got {value!r}")
        return int(self._bounded(name, int(value)))

    def flag(self, name: str) -> bool | None:
        """``true``/``false`` (also ``1``/``0``, ``yes``/``no``), or None."""
        value = self._text(name)
        if value is None:
            return None
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise BadParameter(name, f"must be true or false, got {value!r}")

    def day(self, name: str) -> date | None:
        """A local date ``YYYY-MM-DD``, or None."""
        value = self._text(name)
        if value is None:
            return None
        return _parse_date(name, value)

    def time(self, name: str, *, end_of_day: bool = False) -> float | None:
        """An instant as epoch seconds, or None.

        Takes ISO 8601 (``2026-11-24T09:00:00+08:00``, ``...Z``; without an offset it is local
        time), epoch seconds, or a bare date, which means its first instant -- or, with
        ``end_of_day``, the first instant of the next day, so ``start=D&end=D`` is all of D.
        """
        value = self._text(name)
        if value is None:
            return None
        if _EPOCH_RE.fullmatch(value):
            return float(value)
        if _DATE_RE.fullmatch(value):
            lo, hi = self._calendar.day_bounds(_parse_date(name, value))
            return hi if end_of_day else lo
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadParameter(
                name, f"must be ISO 8601 (2026-11-24T09:00:00+08:00), a date or epoch seconds, got {value!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._calendar.tz)  # local wall time, as QA staff think of it
        return moment.timestamp()

    def _bounded(self, name: str, number: float) -> float:
        spec = self._spec[name]
        if spec.minimum is not None and number < spec.minimum:
            raise BadParameter(name, f"must be at least {spec.minimum:g}, got {number:g}")
        if spec.maximum is not None and number > spec.maximum:
            raise BadParameter(name, f"must be at most {spec.maximum:g}, got {number:g}")
        return number


def _parse_date(name: str, value: str) -> date:
    if not _DATE_RE.fullmatch(value):
        raise BadParameter(name, f"must be a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadParameter(name, f"is not a valid date: {value!r}") from None


def call_filter(query: Query) -> CallFilter:
    """The :class:`CallFilter` of a ``/calls`` request (or of ``pbx-bridge calls``)."""
    start = query.time("start")
    end = query.time("end", end_of_day=True)
    if start is not None and end is not None and end < start:
        raise BadParameter("end", "is before start")
    talk_min = query.number("talk_min")
    talk_max = query.number("talk_max")
    if talk_min is not None and talk_max is not None and talk_max < talk_min:
        raise BadParameter("talk_max", "is below talk_min")
    caller = query.text("caller")
    rule = query.choice("rule")
    service_day = query.day("service_day")
    try:
        CallFilter(caller=caller)  # the store's own check of a number or prefix, named here
    except ValueError as exc:
        raise BadParameter("caller", str(exc)) from None
    outcome = query.choice("outcome")
    direction = query.choice("direction")
    return CallFilter(
        start=start,
        end=end,
        queue=query.text("queue"),
        agent=query.text("agent"),
        outcome=Outcome(outcome) if outcome else None,
        rule=rule,
        caller=caller,
        talk_min=talk_min,
        talk_max=talk_max,
        has_hold=query.flag("has_hold"),
        has_transfer=query.flag("has_transfer"),
        direction=Direction(direction) if direction else None,
        partial=query.flag("partial"),
        service_day=service_day.isoformat() if service_day else None,
    )


# -- the operations ------------------------------------------------------------------------------------

CALL_FILTERS: Final = (
    Param("start", Kind.TIME, "calls that arrived at or after this instant (a bare date: its first instant)"),
    Param("end", Kind.TIME, "calls that arrived before this instant (a bare date: the end of that day)"),
    Param("queue", Kind.STRING, "exact queue name"),
    Param("agent", Kind.STRING, "exact agent device, e.g. PJSIP/1001"),
    Param("outcome", Kind.CHOICE, "the call's outcome", choices=tuple(o.value for o in Outcome)),
    Param("rule", Kind.CHOICE, "calls breaching (or noticed for) this per-call rule id", choices=rules.PER_CALL),
    Param("caller", Kind.STRING, "exact caller number, or a prefix followed by * (5550*)"),
    Param("talk_min", Kind.NUMBER, "talk time at least this many seconds", minimum=0),
    Param("talk_max", Kind.NUMBER, "talk time at most this many seconds", minimum=0),
    Param("has_hold", Kind.BOOLEAN, "calls with (true) or without (false) a hold"),
    Param("has_transfer", Kind.BOOLEAN, "calls with (true) or without (false) a transfer"),
    Param("direction", Kind.CHOICE, "inbound, outbound or internal", choices=tuple(d.value for d in Direction)),
    Param("partial", Kind.BOOLEAN, "calls rebuilt from an incomplete event stream (true) or complete ones (false)"),
    Param("service_day", Kind.DATE, "the call's local service day"),
)
PAGE: Final = (
    Param("limit", Kind.INTEGER, "calls per page", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
    Param("offset", Kind.INTEGER, "calls to skip (newest first)", default=0, minimum=0),
)
CALL_ID: Final = Param("call_id", Kind.STRING, "the call id (the Linkedid of its first channel)", where="path")
AGENT: Final = Param("agent", Kind.STRING, "the agent the complaint is about (PJSIP/1001)", where="path")
DATE: Final = Param("date", Kind.DATE, "a local date in the period (default: today)")
QUEUE: Final = Param("queue", Kind.STRING, "only this queue (default: all)")

OPERATIONS: Final = (
    Operation(
        "listCalls",
        "GET",
        "/calls",
        "Call records matching the filters, newest first, one page",
        Right.RECORDS,
        CALL_FILTERS + PAGE,
        response="CallPage",
    ),
    Operation(
        "exportCallsCsv",
        "GET",
        "/calls.csv",
        "Every call matching the filters as CSV for Excel (UTF-8 with BOM, CRLF)",
        Right.RECORDS,
        CALL_FILTERS,
        media="text/csv",
    ),
    Operation(
        "exportCallsJson",
        "GET",
        "/calls.json",
        "Every call matching the filters as a JSON array (an attachment)",
        Right.RECORDS,
        CALL_FILTERS,
        response="CallRecordList",
    ),
    Operation(
        "getCall",
        "GET",
        "/calls/{call_id}",
        "One call with its complaints and a timeline of what happened",
        Right.RECORDS,
        (CALL_ID,),
        response="CallDetail",
        errors=(401, 403, 404, 503),
    ),
    Operation(
        "addComplaint",
        "POST",
        "/calls/{call_id}/complaints",
        "Tag a call as a complaint against an agent (agent.complaints)",
        Right.TAG,
        (CALL_ID,),
        body="ComplaintRequest",
        response="ComplaintList",
        status=201,
        errors=(400, 401, 403, 404, 503),
    ),
    Operation(
        "removeComplaint",
        "DELETE",
        "/calls/{call_id}/complaints/{agent}",
        "Remove a complaint tag (percent-encode the / of the agent, or send it as is)",
        Right.TAG,
        (CALL_ID, AGENT),
        status=204,
        media="",
        errors=(401, 403, 404, 503),
    ),
    Operation(
        "getScorecards",
        "GET",
        "/scorecards",
        "Per-agent or per-queue scorecards of a day, ISO week or calendar month (local time)",
        Right.AGGREGATES,
        (
            Param("period", Kind.CHOICE, "the period's length", choices=("day", "week", "month"), default="day"),
            DATE,
            Param("by", Kind.CHOICE, "one card per agent or per queue", choices=("agent", "queue"), default="agent"),
        ),
        response="ScorecardReport",
    ),
    Operation(
        "getIntervals",
        "GET",
        "/intervals",
        "Offered, answered, abandoned, within-rings and mean wait per half-hour of a local day",
        Right.AGGREGATES,
        (DATE, QUEUE),
        response="IntervalReport",
    ),
    Operation(
        "getCallbacks",
        "GET",
        "/callbacks",
        "Callers unanswered in service hours and not reached since, with their deadline (callback.overdue)",
        Right.RECORDS,
        (
            Param("since", Kind.TIME, "look at unanswered calls from this instant (default: 30 days ago)"),
            Param("overdue", Kind.BOOLEAN, "only callers past their deadline", default=False),
        ),
        response="CallbackList",
    ),
    Operation(
        "getServiceLevel",
        "GET",
        "/service-level",
        "Service level under the four standard formulas, side by side",
        Right.AGGREGATES,
        (
            Param("start", Kind.TIME, "calls that arrived at or after this instant (default: today's start)"),
            Param("end", Kind.TIME, "calls that arrived before this instant (default: today's end)"),
            QUEUE,
        ),
        response="ServiceLevelReport",
    ),
    Operation(
        "getOpenApi",
        "GET",
        "/openapi.json",
        "This document (no token needed)",
        Right.PUBLIC,
        errors=(),
    ),
)


# -- schemas -------------------------------------------------------------------------------------------


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_TIME: Final = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC with milliseconds"}
_NTIME: Final = {"type": ["string", "null"], "format": "date-time"}
_SECONDS: Final = _nullable("number", minimum=0)

CALL_RECORD_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "One customer call, final (the public record contract; fields may be added).",
    "required": ["call_id", "direction", "arrived_at", "ended_at", "outcome", "hangup_by", "violations", "notices"],
    "properties": {
        "call_id": {"type": "string"},
        "direction": {"type": "string", "enum": [d.value for d in Direction]},
        "caller": _nullable("string"),
        "caller_name": _nullable("string"),
        "callee": _nullable("string"),
        "queue": _nullable("string"),
        "agent": _nullable("string", description="the agent device that answered, e.g. PJSIP/1001"),
        "agent_name": _nullable("string"),
        "arrived_at": _TIME,
        "offered_at": _NTIME,
        "answered_at": _NTIME,
        "ended_at": _TIME,
        "time_to_answer_s": _SECONDS,
        "rings": _nullable("integer", minimum=1),
        "outcome": {"type": "string", "enum": [o.value for o in Outcome]},
        "abandoned_after_s": _SECONDS,
        "talk_s": _SECONDS,
        "holds": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "start": _TIME,
                    "end": _TIME,
                    "seconds": {"type": "number", "minimum": 0},
                    "ended_call_on_hold": {"type": "boolean"},
                    "consult": {"type": "boolean"},
                },
            },
        },
        "hold_count": {"type": "integer", "minimum": 0},
        "hold_total_s": _SECONDS,
        "hold_max_s": _SECONDS,
        "transfers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["blind", "attended"]},
                    "from": _nullable("string"),
                    "to": _nullable("string"),
                    "at": _TIME,
                    "target_answered": {"type": "boolean"},
                    "confirmed_before_leave": {"type": "boolean"},
                    "target_answered_at": _NTIME,
                },
            },
        },
        "ring_no_answer": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"agent": {"type": "string"}, "ring_s": {"type": "number"}, "at": _TIME},
            },
        },
        "hangup_by": {"type": "string", "enum": ["customer", "agent", "system", "unknown"]},
        "picked_up_by": _nullable("string"),
        "after_hours": {"type": "boolean"},
        "recording": _nullable("string", description="the recording file as Asterisk named it"),
        "violations": {"type": "array", "items": {"type": "string", "enum": list(rules.PER_CALL)}},
        "notices": {"type": "array", "items": {"type": "string", "enum": list(rules.PER_CALL)}},
        "partial": {"type": "boolean"},
    },
}

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _object(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        out["required"] = list(required)
    return out


_INT: Final = {"type": "integer", "minimum": 0}
_PCT: Final = _nullable("number", minimum=0, maximum=100, description="percent; null when nothing to divide by")
_COMPLAINT: Final = _object(
    {
        "call_id": {"type": "string"},
        "agent": {"type": "string"},
        "tagged_at": _TIME,
        "tagged_by": {"type": "string"},
        "note": {"type": "string"},
    }
)
_PERIOD: Final = _object(
    {
        "kind": {"type": "string", "enum": ["day", "week", "month"]},
        "first_day": {"type": "string", "format": "date"},
        "last_day": {"type": "string", "format": "date"},
        "start": _TIME,
        "end": _TIME,
        "timezone": {"type": "string"},
    }
)
_SCORECARD: Final = _object(
    {
        "by": {"type": "string", "enum": ["agent", "queue"]},
        "key": _nullable("string", description="agent device or queue; null: calls outside any queue"),
        "name": _nullable("string"),
        "calls": _INT,
        "inbound": _INT,
        "outbound": _INT,
        "answered": _INT,
        "abandoned": _INT,
        "answer_judged": {**_INT, "description": "inbound calls answered in service hours"},
        "within_rings": _INT,
        "within_rings_pct": _PCT,
        "avg_time_to_answer_s": _SECONDS,
        "holds": _INT,
        "holds_over_limit": _INT,
        "unconfirmed_transfers": _INT,
        "agent_hung_up_first": _INT,
        "over_talk_max": {**_INT, "description": "calls breaching duration.over_max (5 minutes by default)"},
        "complaints": _INT,
        "complaints_in_month": _nullable("integer"),
        "complaints_limit": _nullable("integer"),
        "complaints_breached": _nullable("boolean", description="agent.complaints in a calendar month"),
        "logged_in_s": {"type": "number"},
        "paused_s": {"type": "number"},
        "paused_by_reason": {"type": "object", "additionalProperties": {"type": "number"}},
    }
)
_INTERVAL: Final = _object(
    {
        "start": _TIME,
        "end": _TIME,
        "label": {"type": "string", "description": "local HH:MM"},
        "utc_offset": {"type": "string"},
        "offered": _INT,
        "answered": _INT,
        "abandoned": _INT,
        "unanswered": _INT,
        "within_rings": _INT,
        "within_rings_pct": _PCT,
        "avg_wait_s": _SECONDS,
        "after_hours": _INT,
    }
)
_LEVEL: Final = _object(
    {
        "id": {"type": "string", "enum": ["SL1", "SL2", "SL3", "SL4"]},
        "name": {"type": "string"},
        "formula": {"type": "string"},
        "numerator": _INT,
        "denominator": _INT,
        "percent": _PCT,
    }
)
_CALLBACK: Final = _object(
    {
        "number": {"type": "string"},
        "queue": _nullable("string"),
        "rule": {"type": "string", "const": rules.CALLBACK_OVERDUE},
        "first_call_id": {"type": "string"},
        "first_call_at": _TIME,
        "last_call_at": _TIME,
        "attempts": _INT,
        "deadline": _TIME,
        "overdue": {"type": "boolean"},
        "call_ids": {"type": "array", "items": {"type": "string"}},
    }
)

SCHEMAS: Final[dict[str, Any]] = {
    "CallRecord": CALL_RECORD_SCHEMA,
    "CallRecordList": {"type": "array", "items": _ref("CallRecord")},
    "CallPage": _object(
        {"items": {"type": "array", "items": _ref("CallRecord")}, "total": _INT, "limit": _INT, "offset": _INT},
        ("items", "total", "limit", "offset"),
    ),
    "CallDetail": {
        "allOf": [
            _ref("CallRecord"),
            _object(
                {
                    "complaints": {"type": "array", "items": _COMPLAINT},
                    "timeline": {
                        "type": "array",
                        "items": _object(
                            {
                                "at": _TIME,
                                "event": {
                                    "type": "string",
                                    "enum": [
                                        "arrival",
                                        "offer",
                                        "ring_no_answer",
                                        "answer",
                                        "hold",
                                        "hold_end",
                                        "transfer",
                                        "transfer_answered",
                                        "violation",
                                        "notice",
                                        "end",
                                        "recording",
                                    ],
                                },
                            },
                            ("at", "event"),
                        ),
                    },
                    "links": _object(
                        {
                            "self": {"type": "string"},
                            "recording": _nullable(
                                "string",
                                description="a URL under api.recordings_url if set, else the file as Asterisk named it",
                            ),
                        }
                    ),
                }
            ),
        ]
    },
    "Complaint": _COMPLAINT,
    "ComplaintList": _object({"call_id": {"type": "string"}, "complaints": {"type": "array", "items": _COMPLAINT}}),
    "ComplaintRequest": _object(
        {
            "agent": {"type": "string", "description": "default: the agent who answered the call"},
            "note": {"type": "string", "maxLength": 2000},
            "tagged_by": {"type": "string", "description": "the QA user (default: the token's role)"},
        },
        ("note",),
    ),
    "ScorecardReport": _object(
        {"period": _PERIOD, "by": {"type": "string"}, "items": {"type": "array", "items": _SCORECARD}, "skipped": _INT}
    ),
    "IntervalReport": _object(
        {
            "date": {"type": "string", "format": "date"},
            "queue": _nullable("string"),
            "timezone": {"type": "string"},
            "slot_s": _INT,
            "items": {"type": "array", "items": _INTERVAL, "description": "46, 48 or 50 half-hours"},
        }
    ),
    "CallbackList": _object({"since": _TIME, "overdue": _INT, "items": {"type": "array", "items": _CALLBACK}}),
    "ServiceLevelReport": _object(
        {
            "start": _TIME,
            "end": _TIME,
            "queue": _nullable("string"),
            "threshold_s": {"type": "number", "description": "T = rings_limit × ring_seconds"},
            "answered": _INT,
            "answered_within": _INT,
            "abandoned": _INT,
            "abandoned_within": _INT,
            "abandoned_after": _INT,
            "unanswered": _INT,
            "levels": {"type": "array", "items": _LEVEL},
        }
    ),
    "Error": _object(
        {
            "error": {"type": "string"},
            "parameter": {"type": "string"},
            "reason": {"type": "string"},
            "how": {"type": "string"},
        },
        ("error",),
    ),
}

_ERROR_TEXT: Final = {
    400: "a parameter or the body is invalid (the body names it)",
    401: "no token, an unknown token, or no tokens configured (the body says how to configure them)",
    403: "the token's role may not do this",
    404: "no such call (or complaint)",
    503: "the call store cannot be read or written",
}


def _operation_object(op: Operation) -> dict[str, Any]:
    roles = [role.value for role in roles_with(op.right)] if op.right is not Right.PUBLIC else []
    responses: dict[str, Any] = {}
    if op.media == "text/csv":
        ok: dict[str, Any] = {"description": "CSV attachment", "content": {"text/csv": {"schema": {"type": "string"}}}}
    elif op.media == "":
        ok = {"description": "done"}
    elif op.response is not None:
        ok = {"description": "OK", "content": {op.media: {"schema": _ref(op.response)}}}
    else:
        ok = {"description": "OK", "content": {op.media: {"schema": {"type": "object"}}}}
    responses[str(op.status)] = ok
    for status in op.errors:
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [p.to_openapi() for p in op.params],
        "responses": responses,
        "security": [{"bearer": []}] if roles else [],
        "x-roles": roles,
    }
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    return out


def openapi_document(operations: Iterable[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the QA API."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = _operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pbx-bridge QA API",
            "version": __version__,
            "description": (
                "Call records, exports, scorecards and staffing reports measured against the service "
                "standard (rule ids as in SERVICE_STANDARD.md). Authenticate with "
                "'Authorization: Bearer <token>'; roles: wallboard (aggregates only), qa (records, "
                "exports, complaint tags), admin (everything). Tokens come from the environment "
                "variable named by api.tokens_env (default PBX_BRIDGE_API_TOKENS) as 'role:token' entries."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
