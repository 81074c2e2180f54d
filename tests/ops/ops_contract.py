"""Check PromQL (rules, dashboard queries) against the exported metrics contract of metric_names.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from metric_names import AGENT_STATES, LABELS, OUTCOMES, PROMETHEUS_SERIES, family_of
from promql_refs import Matcher, matchers, metric_names

from pbx_bridge.engine import rules as standard

REPO = Path(__file__).resolve().parents[2]
METRICS = REPO / "metrics"
PROMETHEUS_LABELS = frozenset({"job", "instance"})
ALL_LABELS = frozenset().union(*LABELS.values()) | PROMETHEUS_LABELS


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rules_of(name: str) -> list[dict[str, Any]]:
    """The rules of every group of metrics/<name>."""
    return [rule for group in load_yaml(METRICS / name)["groups"] for rule in group["rules"]]


RECORDED = frozenset(r["record"] for r in rules_of("recording.yml"))


def check_expr(expr: str, allowed: set[str] | frozenset[str]) -> list[str]:
    """Problems of one expression: unknown metric names, unknown labels, label values off the contract."""
    problems = [f"unknown metric {name!r}" for name in sorted(metric_names(expr) - allowed)]
    for m in matchers(expr):
        problems += check_matcher(m)
    return problems


def check_matcher(m: Matcher) -> list[str]:
    """Problems of one label matcher: a label the metric does not have, or a value outside a closed set."""
    if m.metric is None or m.metric in RECORDED:
        known = ALL_LABELS | {"le"}
    elif m.metric in PROMETHEUS_SERIES:
        known = PROMETHEUS_LABELS
    else:
        family = family_of(m.metric)
        if family is None:
            return []  # reported as an unknown metric
        known = LABELS[family] | PROMETHEUS_LABELS | ({"le"} if m.metric.endswith("_bucket") else set())
    if m.label not in known:
        return [f"{m.metric}: unknown label {m.label!r}"]
    closed = {"outcome": OUTCOMES, "state": AGENT_STATES, "rule": frozenset(standard.ALL)}.get(m.label)
    if closed is None or m.op not in ("=", "=~") or "$" in m.value:
        return []
    values = m.value.split("|") if m.op == "=~" else [m.value]
    return [f"{m.metric}: {m.label}={v!r} is not in the contract" for v in values if v not in closed]
