"""Readers for monitoring/: the alert rules and the dashboard the tests check."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((MONITORING / "dashboards").glob("*.json"))
ALERTMANAGER_FILE = MONITORING / "alertmanager" / "alertmanager.yml"
RULE_TESTS = Path(__file__).with_name("rules_test.yml")

# Grafana replaces $__rate_interval with max(4 x scrape interval, step + scrape interval);
# the integration test scrapes every second.
RATE_INTERVAL = "15s"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]
    source: Path


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str

    def promql(self) -> str:
        """The query as Grafana sends it (its interval macros replaced)."""
        return self.expr.replace("$__rate_interval", RATE_INTERVAL)


def alerts() -> list[Alert]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append(
                        Alert(
                            name=rule["alert"],
                            expr=" ".join(rule["expr"].split()),
                            labels=rule.get("labels", {}),
                            annotations=rule.get("annotations", {}),
                            source=path,
                        )
                    )
    return found


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p.get("type") != "row"]


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(panel=panel["title"], ref_id=target["refId"], expr=target["expr"])
        for path in DASHBOARD_FILES
        for panel in panels(load_dashboard(path))
        for target in panel.get("targets", [])
    ]


_COMPARISON = re.compile(r"^(?P<signal>.+?)\s*(?:>=|<=|==|!=|>|<)\s*[0-9.]+$", re.DOTALL)


def signal_of(expr: str) -> str:
    """An alert expression without its final threshold comparison (`x > 0.05` -> `x`)."""
    match = _COMPARISON.match(expr.strip())
    return match.group("signal") if match else expr


def service_routes() -> dict[str, str]:
    """The service's URL rules by endpoint: its metrics' `route` label values."""
    from webapp.factory import create_app

    app = create_app({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    return {rule.endpoint: rule.rule for rule in app.url_map.iter_rules()}


def operational_routes() -> set[str]:
    """The routes of the probes and of the scrape: what the clients' error and latency
    signals leave out."""
    from webapp.adminport import ADMIN_ONLY, EVERYWHERE

    return {
        rule for endpoint, rule in service_routes().items() if endpoint in ADMIN_ONLY | EVERYWHERE
    }
