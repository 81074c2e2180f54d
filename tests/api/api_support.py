"""Helpers of the QA API tests: a store filled from the real captures, tokens, a stand-in daemon."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from pbx_bridge.ami.capture import CaptureReader
from pbx_bridge.config import ApiRole, ApiSettings, ApiToken, Settings
from pbx_bridge.engine.hours import CalendarSet
from pbx_bridge.engine.model import CallEnded, CallRecord, Direction, HangupBy, Outcome
from pbx_bridge.engine.tracker import CallTracker
from pbx_bridge.store import SqliteStore

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
FAST = {"batch_interval_s": 0.02, "busy_timeout_s": 0.05, "max_backoff_s": 0.2, "flush_timeout_s": 5.0}
TOKENS = {
    ApiRole.WALLBOARD: "wallboard-token-0123456789",
    ApiRole.QA: "qa-token-0123456789abcdef",
    ApiRole.ADMIN: "admin-token-0123456789abcd",
}
SYNTHETIC_PARTIAL = "synthetic.partial"
SYNTHETIC_CALLBACK = "synthetic.callback"
QUOTED_NAME = 'Li, "Na" 李娜'


@cache
def replayed() -> tuple[CallRecord, ...]:
    """Every call of every shared capture, each capture through a fresh tracker (all in hours)."""
    records: list[CallRecord] = []
    for path in sorted(TRACES.glob("*.ami")):
        tracker = CallTracker(is_open=None)
        for item in CaptureReader(path):
            records.extend(out.record for out in tracker.feed(item) if isinstance(out, CallEnded))
        records.extend(out.record for out in tracker.close_all() if isinstance(out, CallEnded))
    return tuple(records)


def by_caller(records: tuple[CallRecord, ...], caller: str) -> CallRecord:
    """The first call from ``caller``."""
    return next(r for r in records if r.caller == caller)


@cache
def all_records() -> tuple[CallRecord, ...]:
    """The replayed calls plus two made-up ones the captures lack.

    A partial call whose caller name needs CSV quoting (a comma and quotes), and an answered
    outbound call back to the caller of ``d.ami`` (who gave up after 4 s), an hour later.
    """
    records = replayed()
    base = by_caller(records, "5551031")  # 张伟, utf8_names.ami
    partial = replace(base, call_id=SYNTHETIC_PARTIAL, caller="5559999", caller_name=QUOTED_NAME, partial=True)
    missed = by_caller(records, "5550104")
    back = missed.ended_at + 3600.0
    callback = CallRecord(
        call_id=SYNTHETIC_CALLBACK,
        direction=Direction.OUTBOUND,
        caller="1004",
        caller_name=None,
        callee="5550104",
        queue=None,
        agent="PJSIP/1004",
        agent_name=None,
        arrived_at=back,
        offered_at=back,
        answered_at=back + 5.0,
        ended_at=back + 65.0,
        time_to_answer_s=None,
        rings=None,
        outcome=Outcome.ANSWERED,
        abandoned_after_s=None,
        talk_s=60.0,
        holds=(),
        transfers=(),
        ring_no_answer=(),
        hangup_by=HangupBy.CUSTOMER,
        after_hours=False,
        recording=None,
        violations=(),
        notices=(),
        partial=False,
    )
    return (*records, partial, callback)


def api_settings(*, tokens: bool = True) -> Settings:
    """Default settings (Asia/Shanghai, the standard's policy), hours ignored, three tokens."""
    entries = tuple(ApiToken(role, token) for role, token in TOKENS.items()) if tokens else ()
    return Settings(calendars=CalendarSet().ignoring_hours(), api=ApiSettings(tokens=entries))


async def filled_store(path: Path, settings: Settings, records: tuple[CallRecord, ...], now: float) -> SqliteStore:
    """An open store holding ``records`` (the caller closes it)."""
    store = SqliteStore(path, clock=lambda: now, **FAST)
    await store.open()
    calendar = settings.calendars.default
    for record in records:
        store.submit(record, calendar.service_day(record.arrived_at).isoformat())
    assert await store.flush()
    return store


@dataclass
class FakeDaemon:
    """What ``register_api`` reads of a daemon: settings, store and a clock."""

    settings: Settings
    store: SqliteStore
    now: float

    def clock(self) -> float:
        return self.now


def auth(role: ApiRole | None) -> dict[str, str]:
    """The Authorization header of a role's token (none for None)."""
    return {} if role is None else {"Authorization": f"Bearer {TOKENS[role]}"}


def dicts(
    records: tuple[CallRecord, ...], keep: Callable[[dict[str, Any]], bool] = lambda d: True
) -> list[dict[str, Any]]:
    """The record dicts (the API's JSON) of the calls ``keep`` accepts."""
    return [d for d in (r.to_dict() for r in records) if keep(d)]


Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
