"""The alerting and recording rules keep to the metrics contract and the service-standard rule ids."""

from __future__ import annotations

import re
from typing import Any

import pytest
from metric_names import PROMETHEUS_SERIES, series_names
from ops_contract import METRICS, RECORDED, check_expr, load_yaml, rules_of
from promql_refs import template_queries

from pbx_bridge.engine import rules as standard

SEVERITIES = {"critical", "warning"}
RULE_LABEL_VALUES = set(standard.ALL) | {"none"}  # "none": the health of pbx-bridge itself
ALERTS = rules_of("alerts.yml")
RECORDINGS = rules_of("recording.yml")


def test_rule_files_are_not_empty() -> None:
    """alerts.yml and recording.yml define rules."""
    assert ALERTS
    assert RECORDINGS


@pytest.mark.parametrize("rule", RECORDINGS, ids=lambda r: r["record"])
def test_recording_rules_use_exported_metrics_only(rule: dict[str, Any]) -> None:
    """A recording rule reads only exported series (or series recorded before it)."""
    assert check_expr(rule["expr"], set(series_names()) | RECORDED) == []


@pytest.mark.parametrize("rule", RECORDINGS, ids=lambda r: r["record"])
def test_recording_rule_names_follow_the_convention(rule: dict[str, Any]) -> None:
    """Recorded names are level:metric:operations around a pbx_bridge metric."""
    assert re.fullmatch(r"[a-z_]+:pbx_bridge_[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alerts_use_exported_metrics_only(alert: dict[str, Any]) -> None:
    """An alert reads only exported series, recorded series, or Prometheus's own ``up``."""
    allowed = set(series_names()) | RECORDED | set(PROMETHEUS_SERIES)
    problems = check_expr(alert["expr"], allowed)
    for text in alert.get("annotations", {}).values():
        for query in template_queries(text):
            problems += check_expr(query, allowed)
    assert problems == []


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alerts_carry_severity_rule_and_annotations(alert: dict[str, Any]) -> None:
    """Every alert has a severity, a service-standard rule id (or "none"), and English and Chinese text."""
    labels = alert.get("labels", {})
    assert labels.get("severity") in SEVERITIES
    assert labels.get("rule") in RULE_LABEL_VALUES
    annotations = alert.get("annotations", {})
    for key in ("summary", "description", "summary_zh"):
        assert annotations.get(key, "").strip(), f"{alert['alert']}: no {key}"
    assert re.search(r"[\u4e00-\u9fff]", annotations["summary_zh"])
    assert alert["alert"].startswith("PbxBridge")


def test_required_alerts_exist() -> None:
    """The alerts the ops kit promises exist, with the rule ids of the service standard."""
    by_rule = {(a["labels"]["rule"], a["alert"]) for a in ALERTS}
    rules = {rule for rule, _ in by_rule}
    for rule in (
        standard.CALL_UNANSWERED,
        standard.ANSWER_WITHIN_RINGS,
        standard.HOLD_TOO_LONG,
        standard.CALLBACK_OVERDUE,
        standard.CENTER_UNATTENDED,
    ):
        assert rule in rules
    names = {a["alert"] for a in ALERTS}
    assert {"PbxBridgeAmiDisconnected", "PbxBridgeAmiSilent", "PbxBridgeEventsDropped"} <= names


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def _unit_test_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    cases = []
    for path in sorted((METRICS / "tests").glob("*.yml")):
        for test in load_yaml(path)["tests"]:
            cases.append((test.get("name", path.name), test.get("alert_rule_test", [])))
    return cases


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_every_alert_is_unit_tested_firing_and_clearing(alert: dict[str, Any]) -> None:
    """Some promtool test shows the alert firing and, later in the same series, cleared."""
    name = alert["alert"]
    for _, checks in _unit_test_cases():
        mine = sorted((_seconds(c["eval_time"]), bool(c.get("exp_alerts"))) for c in checks if c["alertname"] == name)
        fired = [t for t, firing in mine if firing]
        if fired and any(t > fired[0] and not firing for t, firing in mine):
            return
    pytest.fail(f"no test in metrics/tests shows {name} firing and then clearing")


def test_unit_tests_load_both_rule_files() -> None:
    """Every promtool test file loads recording.yml (alerts use recorded series)."""
    for path in sorted((METRICS / "tests").glob("*.yml")):
        files = load_yaml(path)["rule_files"]
        assert "../recording.yml" in files, path.name
        for f in files:
            assert (path.parent / f).is_file(), f"{path.name}: {f}"


def test_alertmanager_routes_and_inhibitions_match_the_rules() -> None:
    """alertmanager.yml routes only to defined receivers and inhibits only alerts that exist."""
    config = load_yaml(METRICS / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}

    def walk(route: dict[str, Any]) -> None:
        assert route.get("receiver", config["route"]["receiver"]) in receivers
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    names = {a["alert"] for a in ALERTS}
    for inhibit in config.get("inhibit_rules", []):
        for matcher in inhibit.get("source_matchers", []) + inhibit.get("target_matchers", []):
            m = re.fullmatch(r'alertname\s*(=~|=)\s*"([^"]*)"', matcher)
            if m:
                for alertname in m.group(2).split("|"):
                    assert alertname in names, f"inhibit rule names unknown alert {alertname}"
