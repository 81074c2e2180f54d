"""Prometheus metrics. Names and labels are a public contract (alert rules, dashboards use them).

Counters and histograms move as the engine reports finished calls; gauges are computed at
scrape time from the live state, so they are never stale. Label values are bounded: queue
names, outcomes, rule ids, agent states and a fixed set of AMI event types — never caller
numbers, channel names or call ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pbx_bridge.ami.connection import AmiCounters
from pbx_bridge.board import ALL_QUEUES, NO_QUEUE, Board
from pbx_bridge.engine import rules
from pbx_bridge.engine.live import AgentState
from pbx_bridge.engine.model import AgentStateChanged, CallEnded, CallOffered, Outcome, Output
from pbx_bridge.engine.tracker import CallTracker

TTA_BUCKETS = (3.0, 6.0, 9.0, 12.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
HOLD_BUCKETS = (15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0)
TALK_BUCKETS = (30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 600.0, 1200.0)
# AMI event types counted under their own label; anything else is "other" (bounded cardinality).
KNOWN_EVENTS = frozenset(
    {
        "Newchannel", "Newstate", "Hangup", "HangupRequest", "SoftHangupRequest", "DialBegin", "DialEnd",
        "BridgeEnter", "BridgeLeave", "BridgeCreate", "BridgeDestroy", "Hold", "Unhold", "BlindTransfer",
        "AttendedTransfer", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled",
        "AgentConnect", "AgentComplete", "AgentRingNoAnswer", "QueueMemberStatus", "QueueMemberPause",
        "QueueMemberAdded", "QueueMemberRemoved", "LocalBridge", "VarSet", "Newexten", "Pickup", "Rename",
        "MusicOnHoldStart", "MusicOnHoldStop", "DeviceStateChange", "RTCPSent", "RTCPReceived",
        "NewCallerid", "NewConnectedLine", "DialState", "FullyBooted", "Shutdown",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _QueueSeries:
    """One queue's labelled children."""

    calls: dict[str, Any]
    violations: dict[str, Any]
    tta: Any
    hold: Any
    talk: Any


@dataclass(frozen=True, slots=True)
class LiveSources:
    """Where the scrape-time gauges read from."""

    tracker: CallTracker
    board: Board
    ami: AmiCounters | None
    in_hours: Callable[[str | None, float], bool]
    store_errors: Callable[[], int] = lambda: 0
    mqtt_connected: Callable[[], bool | None] = lambda: None
    clock: Callable[[], float] = time.time


class BridgeMetrics:
    """All pbx-bridge metrics in one registry (a fresh one per daemon, and per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # ``*_created`` samples double the series count and no rule or dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter("pbx_bridge_calls", "Finished calls", ["queue", "outcome"], registry=r)
        self.violations = Counter("pbx_bridge_violations", "Rule breaches", ["queue", "rule"], registry=r)
        self.ami_events = Counter("pbx_bridge_ami_events", "AMI events received", ["event"], registry=r)
        self.ami_dropped = Counter("pbx_bridge_ami_events_dropped", "AMI events dropped (queue full)", registry=r)
        self.ami_parse_errors = Counter("pbx_bridge_ami_parse_errors", "AMI frames that did not parse", registry=r)
        self.ami_reconnects = Counter("pbx_bridge_ami_reconnects", "AMI reconnections", registry=r)
        self.tta = Histogram(
            "pbx_bridge_time_to_answer_seconds", "Offered to answered", ["queue"], buckets=TTA_BUCKETS, registry=r
        )
        self.hold = Histogram("pbx_bridge_hold_seconds", "Each hold", ["queue"], buckets=HOLD_BUCKETS, registry=r)
        self.talk = Histogram("pbx_bridge_talk_seconds", "Answer to end", ["queue"], buckets=TALK_BUCKETS, registry=r)
        self._seen = {"dropped": 0, "parse_errors": 0, "reconnects": 0}
        # Labelled children, looked up once (``labels()`` takes a lock and builds a key each call).
        self._queues: dict[str, _QueueSeries] = {}
        self._events: dict[str, Any] = {}

    def ensure_queue(self, queue: str) -> _QueueSeries:
        """Create a queue's series at zero, so rate()/increase() see its first call or breach."""
        series = self._queues.get(queue)
        if series is None:
            series = self._queues[queue] = _QueueSeries(
                calls={outcome.value: self.calls.labels(queue, outcome.value) for outcome in Outcome},
                violations={rule: self.violations.labels(queue, rule) for rule in rules.PER_CALL},
                tta=self.tta.labels(queue),
                hold=self.hold.labels(queue),
                talk=self.talk.labels(queue),
            )
        return series

    def observe(self, out: Output) -> None:
        """Count one engine output."""
        if isinstance(out, CallOffered | AgentStateChanged):
            self.ensure_queue(out.queue or NO_QUEUE)
        elif isinstance(out, CallEnded):
            rec = out.record
            queue = rec.queue or NO_QUEUE
            series = self.ensure_queue(queue)
            series.calls[rec.outcome.value].inc()
            for rule in rec.violations:
                child = series.violations.get(rule)
                if child is None:
                    child = series.violations[rule] = self.violations.labels(queue, rule)
                child.inc()
            if rec.time_to_answer_s is not None:
                series.tta.observe(rec.time_to_answer_s)
            for h in rec.holds:
                series.hold.observe(h.seconds)
            if rec.talk_s is not None:
                series.talk.observe(rec.talk_s)

    def count_events(self, counts: dict[str, int]) -> None:
        children = self._events
        for name, n in counts.items():
            child = children.get(name)
            if child is None:
                child = children[name] = self.ami_events.labels(name if name in KNOWN_EVENTS else "other")
            child.inc(n)

    def sync_ami(self, ami: AmiCounters, parse_errors: int = 0) -> None:
        """Move the AMI counters forward to the connection's own totals."""
        for key, counter, total in (
            ("dropped", self.ami_dropped, ami.dropped),
            ("parse_errors", self.ami_parse_errors, ami.parse_errors + parse_errors),
            ("reconnects", self.ami_reconnects, ami.reconnects),
        ):
            if total > self._seen[key]:
                counter.inc(total - self._seen[key])
                self._seen[key] = total

    def add_live(self, sources: LiveSources) -> None:
        self.registry.register(_LiveCollector(sources))


class _LiveCollector(Collector):
    def __init__(self, s: LiveSources) -> None:
        self.s = s

    def collect(self) -> Iterator[Metric]:
        s = self.s
        now = s.clock()
        snap = s.board.snapshot(s.tracker, now)
        waiting = GaugeMetricFamily("pbx_bridge_calls_waiting", "Callers in queue now", labels=["queue"])
        longest = GaugeMetricFamily("pbx_bridge_longest_wait_seconds", "Longest current wait", labels=["queue"])
        talking = GaugeMetricFamily("pbx_bridge_calls_talking", "Calls connected to an agent now", labels=["queue"])
        agents = GaugeMetricFamily("pbx_bridge_agents", "Queue members by state", labels=["queue", "state"])
        overdue = GaugeMetricFamily(
            "pbx_bridge_callbacks_overdue", "Unanswered callers not reached in time", labels=["queue"]
        )
        unattended = GaugeMetricFamily(
            "pbx_bridge_queue_unattended_seconds",
            "Seconds with no logged-in unpaused agent (service hours)",
            labels=["queue"],
        )
        in_hours = GaugeMetricFamily("pbx_bridge_in_service_hours", "1 inside service hours", labels=["queue"])
        for q in snap["queues"]:
            name = q["queue"]
            if name == ALL_QUEUES:
                continue
            waiting.add_metric([name], q["waiting"])
            longest.add_metric([name], q["longest_wait_s"])
            talking.add_metric([name], q["talking"])
            overdue.add_metric([name], q["callbacks_overdue"])
            open_now = s.in_hours(None if name == NO_QUEUE else name, now)
            in_hours.add_metric([name], 1.0 if open_now else 0.0)
            since = q["unattended_since"]
            unattended.add_metric([name], max(now - since, 0.0) if since is not None and open_now else 0.0)
            counts = q["agents"]
            if counts:
                for state in AgentState:
                    agents.add_metric([name, state.value], counts.get(state.value, 0))
        holds = snap["holds"]
        on_hold = GaugeMetricFamily("pbx_bridge_calls_on_hold", "Calls on hold now")
        on_hold.add_metric([], len({h["call_id"] for h in holds}))
        longest_hold = GaugeMetricFamily("pbx_bridge_longest_hold_seconds", "Longest current hold")
        longest_hold.add_metric([], max((h["seconds"] for h in holds), default=0.0))
        open_v = GaugeMetricFamily("pbx_bridge_open_violations", "Breaches happening now", labels=["rule"])
        open_v.add_metric([rules.HOLD_TOO_LONG], sum(1 for h in holds if h["state"] == "red"))
        yield from (waiting, longest, talking, agents, overdue, unattended, in_hours, on_hold, longest_hold, open_v)
        if s.ami is not None:
            connected = GaugeMetricFamily("pbx_bridge_ami_connected", "1 while logged in to Asterisk")
            connected.add_metric([], 1.0 if s.ami.connected else 0.0)
            age = GaugeMetricFamily("pbx_bridge_last_event_age_seconds", "Seconds since the last AMI frame")
            age.add_metric([], time.monotonic() - s.ami.last_frame_at if s.ami.last_frame_at else 0.0)
            yield connected
            yield age
        store = CounterMetricFamily("pbx_bridge_store_errors", "Store write errors (retried)")
        store.add_metric([], s.store_errors())
        yield store
        mqtt = s.mqtt_connected()
        if mqtt is not None:
            m = GaugeMetricFamily("pbx_bridge_mqtt_connected", "1 while connected to the MQTT broker")
            m.add_metric([], 1.0 if mqtt else 0.0)
            yield m
