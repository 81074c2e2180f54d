"""The Grafana dashboard loads, and every query in it keeps to the exported metrics contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from metric_names import series_names
from ops_contract import RECORDED, check_expr
from promql_refs import label_values_metric, metric_names

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "metrics" / "grafana"
DASHBOARD = json.loads((GRAFANA / "pbx-bridge.json").read_text(encoding="utf-8"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


PANELS = list(_panels(DASHBOARD["panels"]))
TARGETS = [(p["title"], t) for p in PANELS for t in p.get("targets", [])]


def test_dashboard_has_identity_and_panels() -> None:
    """The dashboard has a fixed uid (for links), a title, and query panels."""
    assert DASHBOARD["uid"] == "pbx-bridge"
    assert DASHBOARD["title"]
    assert len(TARGETS) >= 10


@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[f"{t}/{q['refId']}" for t, q in TARGETS])
def test_queries_use_exported_metrics_only(title: str, target: dict[str, Any]) -> None:
    """Each query reads only series pbx-bridge exports or recording.yml records."""
    expr = target["expr"]
    assert metric_names(expr), f"{title}: no metric in {expr!r}"
    assert check_expr(expr, series_names() | RECORDED) == []


def test_template_variables_use_exported_metrics() -> None:
    """Query variables list label values of an exported metric."""
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        metric = label_values_metric(query)
        assert metric in series_names(), f"variable {var['name']}: {query!r}"


def test_panels_use_the_datasource_variable() -> None:
    """Panels and targets query Prometheus through $datasource, so the JSON imports anywhere."""
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_datasource_variable_defaults_to_the_provisioned_source() -> None:
    """The default of $datasource is the Prometheus data source provisioned for compose."""
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "pbx-bridge.yml").read_text())
    prometheus = [d for d in provisioned["datasources"] if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    var = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource")
    assert var["current"]["value"] == prometheus[0]["uid"]
    assert prometheus[0]["url"] == "http://prometheus:9090"


def test_panel_ids_unique_and_layout_fits() -> None:
    """Panel ids are unique and no two panels overlap on the 24-column grid."""
    ids = [p["id"] for p in PANELS]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
