"""The alert rules: valid for promtool, unit-tested both ways, documented for the on-call."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.monitoring.sources import (
    ALERTMANAGER_FILE,
    MONITORING,
    RULE_FILES,
    RULE_TESTS,
    alerts,
    operational_routes,
    panel_queries,
    service_routes,
)
from tests.support.ports import free_port, wait_ready

REQUIRED_ALERTS = {
    "HighErrorRate",
    "HighLatency",
    "InstanceNotReady",
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


# What the clients get: their errors and their latency, in the alerts and on the dashboard.
CLIENT_SIGNALS = {
    **{f"alert {a.name}": a.expr for a in alerts() if a.name in {"HighErrorRate", "HighLatency"}},
    **{
        f"panel {q.panel}/{q.ref_id}": q.expr
        for q in panel_queries()
        if (q.panel, q.ref_id) in {("Error rate (5xx)", "A"), ("p95 latency (SLA 1 s)", "A")}
    },
}
REQUEST_SELECTOR = re.compile(r"http_request\w*\{([^}]*)\}")
ROUTES_LEFT_OUT = re.compile(r'route!~"([^"]*)"')


def test_client_signals_leave_out_exactly_the_probe_and_scrape_routes() -> None:
    """Each selector of the clients' signals leaves out the probes' and the scrape's routes,
    the ones the service has now: a route renamed in the app would otherwise count again."""
    assert len(CLIENT_SIGNALS) == 4, CLIENT_SIGNALS
    wanted = operational_routes()
    assert len(wanted) == 3, wanted  # the liveness and readiness probes, the scrape
    for name, expr in CLIENT_SIGNALS.items():
        selectors = REQUEST_SELECTOR.findall(expr)
        assert selectors, name
        for selector in selectors:
            left_out = ROUTES_LEFT_OUT.findall(selector)
            assert [set(routes.split("|")) for routes in left_out] == [wanted], (name, selector)


def test_the_readiness_alert_watches_the_readiness_route() -> None:
    (alert,) = [a for a in alerts() if a.name == "InstanceNotReady"]
    assert set(re.findall(r'route="([^"]*)"', alert.expr)) == {service_routes()["health.readyz"]}


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


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The real Alertmanager with the repository's configuration, on loopback; one per test,
    since an alert another test sent would inhibit as well."""
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-alertmanager", f"--config.file={ALERTMANAGER_FILE}",
         f"--storage.path={tmp_path}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url + "/-/ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


INHIBITION = {
    "a service without instances explains its down and unready instances, errors and latency": (
        ["ServiceDown", "InstanceDown", "InstanceNotReady", "HighErrorRate", "HighLatency"],
        {"ServiceDown"},
    ),
    "a down instance explains errors and latency, not a down service": (
        ["InstanceDown", "HighErrorRate", "HighLatency"],
        {"InstanceDown"},
    ),
    "an unready instance, out of the Service, explains neither errors nor latency": (
        ["InstanceNotReady", "HighErrorRate", "HighLatency"],
        {"InstanceNotReady", "HighErrorRate", "HighLatency"},
    ),
    "errors and latency alone both page": (["HighErrorRate", "HighLatency"], {"HighErrorRate",
                                                                              "HighLatency"}),
}  # fmt: skip


@pytest.mark.parametrize(("firing", "active"), INHIBITION.values(), ids=INHIBITION.keys())
def test_alertmanager_pages_once_for_one_cause(
    alertmanager: str, firing: list[str], active: set[str]
) -> None:
    """Sent together for the service, only the cause stays active; the same alerts of
    another job are not silenced by ours."""
    run_id = uuid.uuid4().hex[:8]
    alerts = [
        {"labels": {"alertname": name, "job": job, "severity": "critical", "run": run_id}}
        for name in firing
        for job in ("webapp", f"other-{run_id}")
        if job == "webapp" or name != "ServiceDown"
    ]
    requests.post(alertmanager + "/api/v2/alerts", json=alerts, timeout=5).raise_for_status()

    def expected(name: str, job: str) -> str:
        if job == "webapp":
            return "active" if name in active else "suppressed"
        # Without our ServiceDown, another job's own instance alerts still inhibit its own.
        own_cause = name in active or (
            name in {"InstanceDown", "InstanceNotReady"} and "ServiceDown" in active
        )
        return "active" if own_cause else "suppressed"

    # Alertmanager's inhibitor takes the alerts in asynchronously: wait until it has them.
    keys = [(a["labels"]["alertname"], a["labels"]["job"]) for a in alerts]
    want = {key: expected(*key) for key in keys}
    deadline = time.monotonic() + 10
    while True:
        got = requests.get(
            alertmanager + "/api/v2/alerts", params={"filter": f'run="{run_id}"'}, timeout=5
        ).json()
        states = {(a["labels"]["alertname"], a["labels"]["job"]): a["status"]["state"] for a in got}
        if states == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert states == want
