"""The daemon: AMI in, one ordered consumer feeding the engine, store / metrics / live views out.

Theory of operation
-------------------
Every long-lived task runs in one ``asyncio.TaskGroup``: the consumer, the one-second ticker
(live breaches such as a hold passing its limit), the AMI watchdog, the store's writer, the
HTTP server and, when configured, the MQTT publisher. The AMI protocol only appends frames to a
bounded queue; the consumer alone touches the engine, so events are applied strictly in
order and nothing the engine does can stall the socket.

SIGTERM / SIGINT: stop reading AMI, apply every event already received, write every finished
call to the store, publish ``offline``, then exit 0. A rejected login at start-up exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from pbx_bridge.ami.connection import AmiClient, AmiOptions, EventSink, Gap, QueueItem, QueueMembers, Resync
from pbx_bridge.ami.events import AmiEvent, EventDecoder, StreamStart
from pbx_bridge.board import Board
from pbx_bridge.config import Settings
from pbx_bridge.engine.model import (
    AgentRinging,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallOffered,
    CallRecord,
    HoldEnded,
    HoldStarted,
    LiveViolation,
    Outcome,
    Output,
    TransferMade,
    record_from_dict,
)
from pbx_bridge.errors import AmiLoginError, ConfigError, StoreError
from pbx_bridge.hub import Hub
from pbx_bridge.metrics import BridgeMetrics, LiveSources
from pbx_bridge.replay import build_tracker
from pbx_bridge.store.model import AgentStateInterval
from pbx_bridge.web.app import create_app

log = structlog.get_logger(__name__)

TICK_S = 1.0
SNAPSHOT_PER_S = 4  # live snapshots are rebuilt at most this often per second without a change
EXIT_LOGIN_REJECTED = 3
# Every answered call produces these. If some never arrive while calls come and go, an AMI
# eventfilter (or missing read permission) is dropping them, and the measurements are wrong.
CORE_EVENTS = frozenset(
    {"Newchannel", "Hangup", "HangupRequest", "DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave"}
)
CHECK_AFTER_HANGUPS = 200


class Store(Protocol):
    """What the daemon needs of a call store (SQLite or PostgreSQL)."""

    before_write: Callable[[], None] | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def run(self) -> None: ...
    async def flush(self, timeout: float = ...) -> bool: ...
    def submit(self, record: CallRecord, service_day: str, document: dict[str, Any] | None = None) -> None: ...
    def mark_open(
        self, call_id: str, arrived_at: float, payload: dict[str, Any], last_seen: float | None = None
    ) -> None: ...
    async def open_markers(self) -> list[Any]: ...
    async def unanswered_callers(self, since: float) -> list[Any]: ...
    async def reached_numbers(self, since: float) -> dict[str, float]: ...
    async def record_agent_state(self, interval: AgentStateInterval) -> None: ...
    async def calls_between(self, start: float, end: float) -> list[dict[str, Any]]: ...


class _Stop(Exception):
    """Raised inside the task group to end it on a signal."""


@dataclass(frozen=True, slots=True)
class Extras:
    """Optional parts plugged in by the CLI (MQTT publisher, QA API routes)."""

    mqtt: Callable[[Daemon], Coroutine[Any, Any, None]] | None = None
    mqtt_connected: Callable[[], bool | None] = lambda: None
    routes: Callable[[web.Application, Daemon], None] | None = None


class Daemon:
    """One bridge between one Asterisk and its store, metrics and live views."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        registry: CollectorRegistry | None = None,
        extras: Extras | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secret = settings.ami.secret
        if secret is None:
            raise ConfigError(f"ami.secret: set the environment variable {settings.ami.secret_env} or ami.secret_file")
        self.settings = settings
        self.store = store
        self.extras = extras or Extras()
        self.clock = clock
        self.sink = EventSink(limit=settings.ami.queue_size)
        self.tracker = build_tracker(settings)
        self.decoder = EventDecoder()
        calendar = settings.calendars.default
        self._service_day = calendar.service_day
        self.board = Board(settings.policies, calendar.service_day, mask_numbers=settings.wallboard.mask_numbers)
        self.hub = Hub()
        self.metrics = BridgeMetrics(registry)
        self.registry = self.metrics.registry
        ami = settings.ami
        self.ami = AmiClient(
            AmiOptions(
                host=ami.host,
                port=ami.port,
                username=ami.username,
                secret=secret,
                reconnect_min_s=ami.reconnect_min_s,
                reconnect_max_s=ami.reconnect_max_s,
                ping_interval_s=ami.ping_interval_s,
                ping_timeout_s=ami.ping_timeout_s,
                action_timeout_s=ami.action_timeout_s,
                queue_size=ami.queue_size,
            ),
            self.sink,
            clock=clock,
        )
        calendars = settings.calendars
        self.metrics.add_live(
            LiveSources(
                tracker=self.tracker,
                board=self.board,
                ami=self.ami.counters,
                in_hours=lambda queue, ts: calendars.for_queue(queue).is_open(ts),
                store_errors=lambda: int(getattr(getattr(store, "stats", None), "write_errors", 0)),
                mqtt_connected=self.extras.mqtt_connected,
                clock=clock,
            )
        )
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._markers: dict[str, Any] = {}
        self._agent_states: list[AgentStateInterval] = []
        self._seen_events: set[str] = set()
        self._open_dirty: set[str] = set()  # open calls whose marker is missing or stale
        store.before_write = self._mark_open_calls
        self._snapshot: tuple[tuple[int, int], dict[str, Any]] | None = None
        self._hangups_seen = 0
        self._events_checked = False

    # ------------------------------------------------------------------ views

    def snapshot(self) -> dict[str, Any]:
        """The live snapshot; built once per change and quarter second, however many boards read it."""
        now = self.clock()
        key = (self.hub.version, int(now * SNAPSHOT_PER_S))
        if self._snapshot is None or self._snapshot[0] != key:
            snap = self.board.snapshot(self.tracker, now, connected=self.ami.counters.connected)
            wb = self.settings.wallboard
            snap["ui"] = {"lang": wb.lang.value, "title": wb.title, "masked": wb.mask_numbers}
            self._snapshot = (key, snap)
        return self._snapshot[1]

    def health(self) -> dict[str, Any]:
        c = self.ami.counters
        age = time.monotonic() - c.last_frame_at if c.last_frame_at else None
        stats = getattr(self.store, "stats", None)
        return {
            "ok": c.connected,
            "ami_connected": c.connected,
            "last_event_age_s": round(age, 1) if age is not None else None,
            "events": self.tracker.stats.events,
            "open_calls": len(self.tracker.open_calls),
            "dropped_events": c.dropped,
            "store_pending": getattr(stats, "pending", None),
            "store_last_error": getattr(stats, "last_error", None),
        }

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`stop`; return the process exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        status = 0
        await self.store.open()
        try:
            await self._seed()
            await self._start_http()
            await self.ami.start()
            # Outside the task group: the MQTT publisher stops last, after the shutdown has applied
            # the events already received, so their records go out before ``offline``.
            mqtt = asyncio.create_task(self.extras.mqtt(self), name="mqtt") if self.extras.mqtt else None
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(), name="consumer")
                    tg.create_task(self._tick(), name="ticker")
                    tg.create_task(self.ami.watchdog(), name="ami-watchdog")
                    tg.create_task(self.ami.first_login(), name="first-login")  # rejected at start-up: fatal
                    tg.create_task(self.store.run(), name="store-writer")
                    tg.create_task(self._until_stopped(), name="stop")
                    self.started.set()
            except* _Stop:
                pass
            except* AmiLoginError as group:
                log.error("startup_failed", error=str(group.exceptions[0]))
                status = EXIT_LOGIN_REJECTED
            finally:
                await self._shutdown()
                if mqtt is not None:
                    mqtt.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await mqtt
        finally:
            await self.store.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        log.info("stopped", events=self.tracker.stats.events, calls=self.tracker.stats.calls_ended)
        return status

    def stop(self) -> None:
        self.stopping.set()

    async def _until_stopped(self) -> None:
        await self.stopping.wait()
        raise _Stop

    async def _seed(self) -> None:
        """Today's numbers survive a restart: rebuild them from the store; note calls left open."""
        self._markers = {m.call_id: m for m in await self.store.open_markers()}
        now = self.clock()
        start, end = self.settings.calendars.default.day_bounds(self._service_day(now))
        for row in await self.store.calls_between(start, end):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                self.board.add_record(record_from_dict(row))
        # The call-back list spans days: missed callers within the longest deadline.
        deadline_h = max([p.callback_deadline_h for p in self.settings.policies.queues.values()] or [0.0])
        since = now - 3600 * max(deadline_h, self.settings.policies.default.callback_deadline_h) - 86400
        missed = [
            (u.caller, u.queue, u.ended_at)
            for u in await self.store.unanswered_callers(since)
            if not u.after_hours and u.outcome in (Outcome.ABANDONED, Outcome.UNANSWERED)
        ]
        self.board.load_callbacks(missed, await self.store.reached_numbers(since))

    async def _start_http(self) -> None:
        routes = self.extras.routes
        app = create_app(self, extra=(lambda a: routes(a, self)) if routes is not None else None)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, _, port = self.settings.http.listen.rpartition(":")
        site = web.TCPSite(self._runner, host or "127.0.0.1", int(port))
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("http_listening", url=f"http://{host}:{self.http_port}/")

    async def _shutdown(self) -> None:
        try:
            await self.ami.close()
            # Apply every event already received before writing the last records.
            while (item := self.sink.get_nowait()) is not None:
                try:
                    self._apply(item)
                except Exception:
                    log.exception("shutdown_apply_error")
            with contextlib.suppress(Exception):
                await self.store.flush(timeout=10.0)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()

    async def _consume(self) -> None:
        while True:
            item = await self.sink.get()
            self._apply(item)
            # Take whatever else is already queued before yielding: fewer wake-ups under load.
            for _ in range(64):
                more = self.sink.get_nowait()
                if more is None:
                    break
                self._apply(more)

    def _apply(self, item: QueueItem) -> None:
        tracker = self.tracker
        if isinstance(item, Gap):
            log.error("ami_events_dropped", dropped=item.dropped)
            self._dispatch(tracker.feed(StreamStart(self.decoder.last_ts, "gap")))
        elif isinstance(item, Resync):
            # Times come from the stream: the resync happens "after the last event we saw".
            ts = self.decoder.last_ts or item.ts
            self._dispatch(tracker.resync(item.uniqueids, ts))
            self._settle_markers(item)
        elif isinstance(item, QueueMembers):
            ts = self.decoder.last_ts or self.clock()
            for member in item.members:
                self._dispatch(tracker.feed(AmiEvent("QueueMemberStatus", ts, headers=member)))
        else:
            counts: dict[str, int] = {}
            decode = self.decoder.decode
            fallback = self.clock()  # for unstamped events before the first stamp; read once per batch
            for frame in item:
                event = decode(frame, fallback)
                if event is None:
                    continue
                if type(event) is AmiEvent:
                    counts[event.name] = counts.get(event.name, 0) + 1
                try:
                    outputs = tracker.feed(event)
                except Exception:  # one bad call must not stop the stream
                    log.exception("engine_error", ami_event=getattr(event, "name", "banner"))
                    tracker.stats.count_unplaced("engine error")
                    continue
                if outputs:
                    self._dispatch(outputs)
            self.metrics.count_events(counts)
            if not self._events_checked:
                self._check_event_coverage(counts)
        self.metrics.sync_ami(self.ami.counters)

    def _settle_markers(self, resync: Resync) -> None:
        """Calls a previous run left open (it was killed): close as partial those that are gone.

        A call still up keeps its marker; its later events rebuild it (as partial) under the
        same call id, and the store's upsert replaces the marker's record.
        """
        if not self._markers:
            return
        live = {c.call_id for c in self.tracker.open_calls}
        for call_id, marker in list(self._markers.items()):
            del self._markers[call_id]
            uniqueids = set(marker.payload.get("linkedids") or [call_id])
            if call_id in live or uniqueids & resync.uniqueids:
                continue
            try:
                record = replace(record_from_dict(marker.payload), partial=True)
            except (KeyError, ValueError, TypeError):
                log.warning("open_marker_unreadable", call_id=call_id)
                continue
            log.warning("call_closed_after_restart", call_id=call_id)
            self._dispatch([CallEnded(record)])

    def _mark_open_calls(self) -> None:
        """Just before each store write: a fresh marker for every open call that changed.

        The marker goes out with the same write an immediate one would have, and a call that
        ended meanwhile (its record is in that write) costs no draft at all.
        """
        dirty, self._open_dirty = self._open_dirty, set()
        for call_id in dirty:
            draft = self.tracker.draft(call_id)
            if draft is None:  # ended meanwhile
                continue
            payload = draft.to_dict()
            payload["linkedids"] = list(draft.linkedids)
            self.store.mark_open(call_id, draft.arrived_at, payload, last_seen=draft.ended_at)

    def _check_event_coverage(self, counts: dict[str, int]) -> None:
        """Warn once if calls flow but a core event type never arrives (a filter drops it)."""
        self._seen_events.update(counts)
        self._hangups_seen += counts.get("Hangup", 0)
        if self._hangups_seen < CHECK_AFTER_HANGUPS:
            return
        self._events_checked = True
        missing = sorted(CORE_EVENTS - self._seen_events)
        if missing:
            log.error(
                "ami_events_missing",
                missing=missing,
                hint="check manager.conf: read=call,agent,system,dialplan and no include eventfilter dropping these",
            )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            states, self._agent_states = self._agent_states, []
            for interval in states:
                try:
                    await self.store.record_agent_state(interval)
                except (ValueError, StoreError) as exc:  # one bad interval must not stop the daemon
                    log.warning("agent_state_not_stored", agent=interval.agent, error=str(exc))
            self._dispatch(self.tracker.tick(self.clock()))
            self.hub.publish({"type": "tick", "ts": self.clock()})

    def _dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            try:
                self._deliver(out)
            except Exception:  # one bad output must not stop the consumer (and the daemon)
                log.exception("output_error", output=type(out).__name__, call_id=getattr(out, "call_id", None))
                self.tracker.stats.count_unplaced("output error")

    def _deliver(self, out: Output) -> None:
        """Hand one engine output to metrics, the store, the board and the live views."""
        self.metrics.observe(out)
        document: dict[str, Any] | None = None
        if isinstance(out, CallEnded):
            rec = out.record
            document = rec.to_dict()  # built once: the store and the live views share it
            self.store.submit(rec, self._service_day(rec.arrived_at).isoformat(), document)
            self.board.add_record(rec)
            log.info(
                "call",
                call_id=rec.call_id,
                queue=rec.queue,
                agent=rec.agent,
                outcome=rec.outcome.value,
                tta_s=round(rec.time_to_answer_s, 1) if rec.time_to_answer_s is not None else None,
                talk_s=round(rec.talk_s, 1) if rec.talk_s is not None else None,
                hangup_by=rec.hangup_by.value,
                violations=list(rec.violations),
                partial=rec.partial,
            )
        elif isinstance(out, CallOffered | CallAnswered | HoldStarted | TransferMade):
            # Its marker is (re)written with the store's next write (see _mark_open_calls):
            # a draft record is the costliest thing on the event path, so not once per event.
            self._open_dirty.add(out.call_id)
        elif isinstance(out, AgentStateChanged):
            self._agent_states.extend(agent_intervals(out))
        elif isinstance(out, LiveViolation):
            self.board.add_live_violation(out)
            log.warning("live_violation", rule=out.rule, call_id=out.call_id, agent=out.agent, value=out.value)
        self.hub.publish(live_message(out, document))


def agent_intervals(change: AgentStateChanged) -> tuple[AgentStateInterval, AgentStateInterval]:
    """The interval a state change closes and the one it opens (for scorecards' logged-in/paused time)."""
    since = min(change.previous_since, change.ts)
    return (
        AgentStateInterval(change.agent, change.queue, change.previous, change.previous_reason, since, change.ts),
        AgentStateInterval(change.agent, change.queue, change.state, change.reason, change.ts, None),
    )


def live_message(out: Output, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """An engine output as the JSON message the live views (SSE, MQTT) carry.

    ``document``: a finished call's ``record.to_dict()``, when the caller has built it already.
    """
    if isinstance(out, CallEnded):
        return {"type": "record", "call_id": out.record.call_id, "record": document or out.record.to_dict()}
    if isinstance(out, LiveViolation):
        return {
            "type": "violation",
            "rule": out.rule,
            "call_id": out.call_id,
            "agent": out.agent,
            "queue": out.queue,
            "value": round(out.value, 1),
            "limit": out.limit,
            "live": True,
            "ts": out.ts,
        }
    if isinstance(out, AgentStateChanged):
        return {
            "type": "agent_state",
            "agent": out.agent,
            "name": out.name,
            "queue": out.queue,
            "state": out.state,
            "reason": out.reason,
            "ts": out.ts,
        }
    kind = {
        CallOffered: "offered",
        AgentRinging: "ringing",
        CallAnswered: "answered",
        HoldStarted: "hold",
        HoldEnded: "unhold",
        TransferMade: "transfer",
    }[type(out)]
    body: dict[str, Any] = {"type": "call_event", "event": kind, "call_id": out.call_id, "ts": out.ts}
    if isinstance(out, AgentRinging | CallAnswered | HoldStarted):
        body["agent"] = out.agent
    if isinstance(out, CallOffered | CallAnswered):
        body["queue"] = out.queue
    if isinstance(out, CallAnswered):
        body["time_to_answer_s"] = round(out.time_to_answer_s, 3)
    if isinstance(out, HoldEnded):
        body["seconds"] = round(out.seconds, 3)
    if isinstance(out, TransferMade):
        body["transfer"] = out.transfer.to_dict()
    return body
