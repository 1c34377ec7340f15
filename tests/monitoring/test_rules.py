"""The alert rules: valid for promtool, unit-tested both ways, documented for the on-call."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.monitoring.sources import ALERTMANAGER_FILE, MONITORING, RULE_FILES, RULE_TESTS, alerts

REQUIRED_ALERTS = {
    "HighErrorRate",
    "HighLatency",
    "InstanceDown",
    "ServiceDown",
    "PodCrashLooping",
    "NodeMemoryPressure",
    "NodeDiskPressure",
}
SEVERITIES = {"critical", "warning", "info"}


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rule_files() -> None:
    result = run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run("promtool", "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_required_alerts_exist_once() -> None:
    names = [alert.name for alert in alerts()]
    assert sorted(set(names)) == sorted(names), "an alert name is defined twice"
    assert set(names) >= REQUIRED_ALERTS


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a.name)
def test_every_alert_has_a_firing_and_a_silent_unit_test(alert) -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [
        case
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert.name
    ]
    assert any(case.get("exp_alerts") for case in cases), f"no test where {alert.name} fires"
    assert any(not case.get("exp_alerts") for case in cases), (
        f"no test where {alert.name} stays silent"
    )


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a.name)
def test_every_alert_tells_the_on_call_what_to_do(alert) -> None:
    assert alert.labels.get("severity") in SEVERITIES
    assert alert.annotations.get("summary", "").strip()
    assert alert.annotations.get("runbook", "").strip()
    url = alert.annotations.get("runbook_url", "")
    anchor = url.rpartition("#")[2]
    assert url.endswith(f"monitoring/runbooks.md#{alert.name.lower()}"), url
    headings = re.findall(r"^## (\S+)$", (MONITORING / "runbooks.md").read_text(), re.MULTILINE)
    assert anchor in {h.lower() for h in headings}, f"runbooks.md has no section {alert.name}"


def test_alertmanager_config_is_valid_and_sends_nothing_by_default() -> None:
    result = run("amtool", "check-config", str(ALERTMANAGER_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    assert config["route"]["receiver"] == "null"
    # A receiver with no *_configs drops what it gets.
    assert config["receivers"] == [{"name": "null"}]
