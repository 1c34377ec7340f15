"""The monitoring role against a real Kubernetes 1.35 API server (tests/controlplane).

No kubelet runs there, so the chart itself is never installed: stand-in CRDs take the
place of the ones k3s and the chart bring, and the role runs with monitoring_wait=false.
What is checked is what the API server stores, that secrets stay out of the log, and
that a second run changes nothing.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.playbook import PASSWORD, play
from tests.monitoring.sources import DASHBOARD_FILES, RULE_FILES

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

STUB_CRDS = Path(__file__).with_name("stub-crds.yml")


def kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def get(kubeconfig: Path, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", kind, name, "-n", namespace, "-o", "json"))


def changed(stdout: str) -> int:
    match = re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", stdout)
    assert match, stdout[-2000:]
    return int(match.group(1))


@pytest.fixture(scope="module")
def applied(controlplane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kubeconfig = controlplane.kubeconfig
    kubectl(kubeconfig, "apply", "-f", str(STUB_CRDS))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/helmcharts.helm.cattle.io", "crd/prometheusrules.monitoring.coreos.com",
            "crd/podmonitors.monitoring.coreos.com")  # fmt: skip
    tmp = tmp_path_factory.mktemp("cluster")
    first, report = play(tmp, kubeconfig, monitoring_wait=False)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    second, _ = play(tmp, kubeconfig, monitoring_wait=False)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr
    return {"kubeconfig": kubeconfig, "first": first, "second": second, "url": report.read_text()}


def test_second_run_changes_nothing(applied) -> None:
    assert changed(applied["first"].stdout) > 0
    assert changed(applied["second"].stdout) == 0


def test_secrets_stay_out_of_the_log(applied) -> None:
    for run in (applied["first"], applied["second"]):
        assert PASSWORD not in run.stdout + run.stderr
        assert base64.b64encode(PASSWORD.encode()).decode() not in run.stdout


def test_grafana_admin_secret_holds_the_password(applied) -> None:
    secret = get(applied["kubeconfig"], "secret", "grafana-admin", "monitoring")
    assert base64.b64decode(secret["data"]["admin-password"]).decode() == PASSWORD
    assert base64.b64decode(secret["data"]["admin-user"]).decode() == "admin"


HOST_POD = """
apiVersion: v1
kind: Pod
metadata: {name: host-probe, namespace: NAMESPACE}
spec:
  hostNetwork: true
  hostPID: true
  containers: [{name: probe, image: ghcr.io/devsecops/probe@sha256:%s}]
""" % ("5f" * 32)


def test_only_the_node_exporter_namespace_admits_host_namespaces(applied) -> None:
    """Monitoring enforces baseline; the node exporter's own namespace alone is privileged."""
    labels = get(applied["kubeconfig"], "namespace", "monitoring", "default")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    verdicts = {}
    for namespace in ("monitoring", "monitoring-node-exporter"):
        verdicts[namespace] = subprocess.run(
            ["kubectl", f"--kubeconfig={applied['kubeconfig']}", "apply", "--dry-run=server",
             "-f", "-"],
            input=HOST_POD.replace("NAMESPACE", namespace),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert verdicts["monitoring"].returncode != 0
    assert 'violates PodSecurity "baseline:latest"' in verdicts["monitoring"].stderr
    admitted = verdicts["monitoring-node-exporter"]
    assert admitted.returncode == 0, admitted.stderr


def test_the_cluster_holds_the_rules_dashboard_and_chart(applied) -> None:
    kubeconfig = applied["kubeconfig"]
    rule = get(kubeconfig, "prometheusrule", "webapp", "monitoring")
    expected = [g for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    cm = get(kubeconfig, "configmap", "dashboards-webapp", "monitoring")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in DASHBOARD_FILES}
    chart = get(kubeconfig, "helmchart", "kube-prometheus-stack", "kube-system")
    assert chart["spec"]["version"] == "80.4.1"
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["prometheus"]["prometheusSpec"]["ruleSelectorNilUsesHelmValues"] is False
    monitor = get(kubeconfig, "podmonitor", "webapp", "monitoring")
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "admin", "path": "/metrics"}]
    am = get(kubeconfig, "secret", "alertmanager-config", "monitoring")
    config = yaml.safe_load(base64.b64decode(am["data"]["alertmanager.yaml"]))
    assert config["route"]["receiver"] == "null"
    assert applied["url"] == "http://127.0.0.1:30300/"


def traefik_objects(kubeconfig: Path) -> set[str]:
    names = kubectl(
        kubeconfig, "get", "middlewares.traefik.io,ingressroutes.traefik.io",
        "-n", "monitoring", "-o", "name",
    )  # fmt: skip
    return set(names.split())


def test_grafana_behind_the_ingress_is_filtered_and_redirected(applied, tmp_path: Path) -> None:
    """Behind the Ingress, the real API server (with Traefik's CRDs) admits the admin-range
    filter and the redirect the chart's Ingress names; back on a NodePort they are removed.
    Runs last: it leaves the cluster as `applied` made it."""
    kubeconfig = applied["kubeconfig"]
    ingress = {"monitoring_grafana_exposure": "ingress",
               "monitoring_grafana_allowed_cidrs": ["198.51.100.0/24", "127.0.0.1/32"]}  # fmt: skip
    first, report = play(tmp_path, kubeconfig, monitoring_wait=False, **ingress)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert report.read_text() == "https://webapp.lab.localhost/grafana/"
    assert traefik_objects(kubeconfig) == {
        "middleware.traefik.io/grafana-admin-ranges",
        "middleware.traefik.io/grafana-https-redirect",
        "ingressroute.traefik.io/grafana-https-redirect",
    }
    allow = get(kubeconfig, "middlewares.traefik.io", "grafana-admin-ranges", "monitoring")
    assert allow["spec"]["ipAllowList"]["sourceRange"] == ["198.51.100.0/24", "127.0.0.1/32"]
    chart = get(kubeconfig, "helmchart", "kube-prometheus-stack", "kube-system")
    annotations = yaml.safe_load(chart["spec"]["valuesContent"])["grafana"]["ingress"][
        "annotations"
    ]
    # Traefik's name for a Middleware of this namespace: <namespace>-<name>@kubernetescrd.
    assert annotations["traefik.ingress.kubernetes.io/router.middlewares"] == (
        f"{allow['metadata']['namespace']}-{allow['metadata']['name']}@kubernetescrd"
    )
    # Its certificate from the lab contract's ACME resolver, as the service's.
    assert annotations["traefik.ingress.kubernetes.io/router.tls.certresolver"] == "lab-acme"
    again, _ = play(tmp_path, kubeconfig, monitoring_wait=False, **ingress)
    assert again.returncode == 0 and changed(again.stdout) == 0, again.stdout[-6000:]

    back, _ = play(tmp_path, kubeconfig, monitoring_wait=False)
    assert back.returncode == 0, back.stdout[-6000:] + back.stderr
    assert traefik_objects(kubeconfig) == set()
    values = yaml.safe_load(
        get(kubeconfig, "helmchart", "kube-prometheus-stack", "kube-system")["spec"][
            "valuesContent"
        ]
    )
    assert "ingress" not in values["grafana"]
