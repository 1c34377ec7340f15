"""The Grafana dashboard: every panel queries, has a unit and a title; no fixed datasource."""

from __future__ import annotations

from typing import Any

import pytest

from tests.monitoring.sources import DASHBOARD_FILES, load_dashboard, panels

DASHBOARDS = [pytest.param(load_dashboard(p), id=p.name) for p in DASHBOARD_FILES]
WEBAPP = load_dashboard(next(p for p in DASHBOARD_FILES if p.name == "webapp.json"))


def datasource_refs(node: Any) -> list[Any]:
    """Every `datasource` value anywhere in the dashboard."""
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        for value in node.values():
            found.extend(datasource_refs(value))
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in datasource_refs(item)]
    return []


def test_there_is_a_dashboard() -> None:
    assert DASHBOARD_FILES


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_every_panel_has_title_query_and_unit(dashboard: dict[str, Any]) -> None:
    found = panels(dashboard)
    assert found
    for panel in found:
        title = panel.get("title", "").strip()
        assert title, f"panel {panel.get('id')} has no title"
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr", "").strip() for t in targets), f"{title}: no query"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{title}: no unit"


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_the_datasource_is_a_template_variable(dashboard: dict[str, Any]) -> None:
    variables = dashboard["templating"]["list"]
    ds_vars = [
        v["name"] for v in variables if v["type"] == "datasource" and v["query"] == "prometheus"
    ]
    assert ds_vars, "no Prometheus datasource variable"
    refs = datasource_refs(dashboard.get("panels", []))
    assert refs, "panels name no datasource"
    for ref in refs:
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        assert uid in {f"${{{name}}}" for name in ds_vars} | {f"${name}" for name in ds_vars}, ref


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))


def by_type(kind: str) -> list[dict[str, Any]]:
    return [panel for panel in panels(WEBAPP) if panel["type"] == kind]


def exprs(panel: dict[str, Any]) -> str:
    return " ".join(target["expr"] for target in panel["targets"])


def test_request_rate_by_status_and_by_route() -> None:
    series = by_type("timeseries")
    assert any("by (status)" in exprs(p) and "http_requests_total" in exprs(p) for p in series)
    assert any("route)" in exprs(p) and "http_requests_total" in exprs(p) for p in series)


def test_error_rate_gauge_turns_yellow_at_1_and_red_at_5_percent() -> None:
    (gauge,) = by_type("gauge")
    defaults = gauge["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit"
    steps = [(s["color"], s["value"]) for s in defaults["thresholds"]["steps"]]
    assert steps == [("green", None), ("yellow", 0.01), ("red", 0.05)]
    assert 'status=~"5.."' in exprs(gauge)


def test_p95_latency_shows_the_1s_sla_line() -> None:
    (panel,) = [p for p in by_type("timeseries") if "histogram_quantile(0.95" in exprs(p)]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert 1 in [step["value"] for step in defaults["thresholds"]["steps"]]


def test_instances_up_and_latency_heatmap() -> None:
    assert any("up{" in exprs(p) for p in by_type("stat"))
    (heatmap,) = by_type("heatmap")
    assert "http_request_duration_seconds_bucket" in exprs(heatmap)
    assert all(t.get("format") == "heatmap" for t in heatmap["targets"])
