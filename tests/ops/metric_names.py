"""The metric families pbx-bridge exports: the contract the ops kit in ``metrics/`` is written against.

Alert rules, recording rules and the Grafana dashboard may only use these names (and the series
recorded by ``metrics/recording.yml``). A change here is a change of the public metrics contract:
the daemon's exporter, the dashboard and the alerts must follow.
"""

from __future__ import annotations

from typing import Final

# Counters, named as exposed (prometheus_client adds ``_total``).
COUNTERS: Final[frozenset[str]] = frozenset(
    {
        "pbx_bridge_calls_total",
        "pbx_bridge_violations_total",
        "pbx_bridge_ami_events_total",
        "pbx_bridge_ami_events_dropped_total",
        "pbx_bridge_ami_parse_errors_total",
        "pbx_bridge_ami_reconnects_total",
        "pbx_bridge_store_errors_total",
    }
)

# Histograms, by family name; each exposes _bucket, _sum and _count series.
HISTOGRAMS: Final[frozenset[str]] = frozenset(
    {
        "pbx_bridge_time_to_answer_seconds",
        "pbx_bridge_hold_seconds",
        "pbx_bridge_talk_seconds",
    }
)

GAUGES: Final[frozenset[str]] = frozenset(
    {
        "pbx_bridge_calls_waiting",
        "pbx_bridge_longest_wait_seconds",
        "pbx_bridge_calls_on_hold",
        "pbx_bridge_longest_hold_seconds",
        "pbx_bridge_calls_talking",
        "pbx_bridge_agents",
        "pbx_bridge_ami_connected",
        "pbx_bridge_last_event_age_seconds",
        "pbx_bridge_callbacks_overdue",
        "pbx_bridge_queue_unattended_seconds",
        "pbx_bridge_in_service_hours",
        "pbx_bridge_open_violations",
        "pbx_bridge_mqtt_connected",
    }
)

EXPORTED_METRICS: Final[frozenset[str]] = COUNTERS | HISTOGRAMS | GAUGES
"""Base family names (counters with their ``_total``)."""

HISTOGRAM_EDGES: Final[dict[str, tuple[float, ...]]] = {
    "pbx_bridge_time_to_answer_seconds": (3, 6, 9, 12, 15, 20, 30, 60, 120, 300),
    "pbx_bridge_hold_seconds": (15, 30, 45, 60, 90, 120, 300),
    "pbx_bridge_talk_seconds": (30, 60, 120, 180, 240, 300, 600, 1200),
}

# Label names of each family (besides job and instance, which Prometheus adds, and le on buckets).
LABELS: Final[dict[str, frozenset[str]]] = {
    "pbx_bridge_calls_total": frozenset({"queue", "outcome"}),
    "pbx_bridge_violations_total": frozenset({"queue", "rule"}),
    "pbx_bridge_ami_events_total": frozenset({"event"}),
    "pbx_bridge_ami_events_dropped_total": frozenset(),
    "pbx_bridge_ami_parse_errors_total": frozenset(),
    "pbx_bridge_ami_reconnects_total": frozenset(),
    "pbx_bridge_store_errors_total": frozenset(),
    "pbx_bridge_time_to_answer_seconds": frozenset({"queue"}),
    "pbx_bridge_hold_seconds": frozenset({"queue"}),
    "pbx_bridge_talk_seconds": frozenset({"queue"}),
    "pbx_bridge_calls_waiting": frozenset({"queue"}),
    "pbx_bridge_longest_wait_seconds": frozenset({"queue"}),
    "pbx_bridge_calls_on_hold": frozenset(),
    "pbx_bridge_longest_hold_seconds": frozenset(),
    "pbx_bridge_calls_talking": frozenset({"queue"}),
    "pbx_bridge_agents": frozenset({"queue", "state"}),
    "pbx_bridge_ami_connected": frozenset(),
    "pbx_bridge_last_event_age_seconds": frozenset(),
    "pbx_bridge_callbacks_overdue": frozenset({"queue"}),
    "pbx_bridge_queue_unattended_seconds": frozenset({"queue"}),
    "pbx_bridge_in_service_hours": frozenset({"queue"}),
    "pbx_bridge_open_violations": frozenset({"rule"}),
    "pbx_bridge_mqtt_connected": frozenset(),
}

# Closed sets of label values. queue="none" marks calls that went through no queue.
OUTCOMES: Final[frozenset[str]] = frozenset({"answered", "abandoned", "unanswered", "not_offered", "failed"})
AGENT_STATES: Final[frozenset[str]] = frozenset({"available", "ringing", "on_call", "paused", "logged_out"})

# Series that Prometheus itself writes for every target; alert rules may use them
# (a dead man's switch for pbx-bridge needs ``up``), the dashboard does not.
PROMETHEUS_SERIES: Final[frozenset[str]] = frozenset({"up"})


def series_names() -> frozenset[str]:
    """Every series name the exporter can expose: counters as named, gauges, histogram parts."""
    parts = {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    return frozenset(COUNTERS | GAUGES | parts)


def family_of(series: str) -> str | None:
    """The exported family a series name belongs to, or None."""
    if series in COUNTERS or series in GAUGES:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return None
