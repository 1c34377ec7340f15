"""The monitoring role: manifests rendered from monitoring/, and bad input refused before
any contact with the cluster (the kubeconfig points at a port nothing listens on)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.manifests.render import objects as manifest_objects
from tests.manifests.render import render_all
from tests.monitoring.playbook import PASSWORD, play
from tests.monitoring.sources import (
    ALERTMANAGER_FILE,
    DASHBOARD_FILES,
    RULE_FILES,
    alerts,
)
from tests.support.moto import MotoServer
from tests.support.ports import free_port

FIRST_CLUSTER_TASK = "Ensure the monitoring namespaces exist"


@pytest.fixture(scope="module")
def unreachable_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    server = f"https://127.0.0.1:{free_port()}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path


def rendered(directory: Path) -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted(directory.glob("*.yml")) for d in yaml.safe_load_all(p.read_text())]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


WEBHOOK = "http://127.0.0.1:9/hook"
# prod's secret name for the on-call webhook (inventories/prod), held by moto here.
ONCALL_SECRET = "k3s-ec2/prod/alertmanager/oncall-webhook"  # pragma: allowlist secret
ONCALL_WEBHOOK = "https://hooks.example.invalid/services/T000/B000/oncall-token"
BAD_INPUT = {
    "unknown-exposure": (
        {"monitoring_grafana_exposure": "loadbalancer"},
        "value of monitoring_grafana_exposure must be one of: nodeport, ingress",
    ),
    "retention-not-a-duration": (
        {"monitoring_prometheus_retention": "15 days"},
        'monitoring_prometheus_retention="15 days" is not a Prometheus duration',
    ),
    "webhook-secret-missing": (
        {"monitoring_alertmanager_webhook_secret_id": "k3s-ec2/prod/alertmanager/absent"},
        "Secrets Manager secret k3s-ec2/prod/alertmanager/absent (region us-east-1) is missing,",
    ),
    "receiver-name-taken": (
        {
            "monitoring_alertmanager_webhook_secret_id": ONCALL_SECRET,
            "monitoring_alertmanager_receivers": [{"name": "oncall"}],
        },
        'needs a name other than "null" and than the webhook receiver\'s',
    ),
    "node-exporter-in-the-apps-namespace": (
        {"monitoring_node_exporter_namespace": "webapp"},
        'monitoring_node_exporter_namespace="webapp" must be a namespace name (a DNS label) '
        "of its own",
    ),
    "node-exporter-in-monitoring": (
        {"monitoring_node_exporter_namespace": "monitoring"},
        "so it may not be monitoring, webapp or a Kubernetes system namespace",
    ),
    "prometheus-in-the-apps-namespace": (
        {"monitoring_namespace": "webapp"},
        'monitoring_namespace="webapp" must be a namespace name (a DNS label) other than the '
        "service's (webapp)",
    ),
    "grafana-open-to-nobody": (
        {"monitoring_grafana_exposure": "ingress", "monitoring_grafana_allowed_cidrs": []},
        "Grafana behind the Ingress needs monitoring_grafana_allowed_cidrs",
    ),
    "grafana-range-with-host-bits": (
        {
            "monitoring_grafana_exposure": "ingress",
            "monitoring_grafana_allowed_cidrs": ["10.0.0.5/24"],
        },
        'each a network address with its prefix (got ["10.0.0.5/24"])',
    ),
    "grafana-tls-without-host": (
        {"monitoring_grafana_exposure": "ingress", "monitoring_grafana_ingress_host": ""},
        "a host name for its certificate (monitoring_grafana_ingress_host, from the contract's "
        'k3s_ec2_ingress_host; got "")',
    ),
    "offline-chart-checksum": (
        {"monitoring_chart_file": "/nonexistent/chart.tgz", "monitoring_chart_sha256": "0" * 64},
        "/nonexistent/chart.tgz is missing or its SHA-256",
    ),
}


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    report: Path
    out: Path
    chart: Path


@pytest.fixture(scope="module")
def secrets_manager() -> Iterator[dict[str, str]]:
    """A moto server holding the on-call webhook secret; the role's settings to reach it."""
    with MotoServer() as moto:
        boto3.client(
            "secretsmanager",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # pragma: allowlist secret
        ).create_secret(Name=ONCALL_SECRET, SecretString=ONCALL_WEBHOOK)
        yield {
            "monitoring_aws_endpoint_url": moto.endpoint_url,
            "monitoring_aws_region": "us-east-1",
            "monitoring_aws_access_key": "testing",
            "monitoring_aws_secret_key": "testing",  # pragma: allowlist secret
        }


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    unreachable_kubeconfig: Path,
    secrets_manager: dict[str, str],
) -> dict[str, Run]:
    """Every playbook run of this module, started together (each is mostly Python start-up)."""
    chart = tmp_path_factory.mktemp("chart") / "kube-prometheus-stack-80.4.1.tgz"
    chart.write_bytes(os.urandom(4096))
    cases: dict[str, dict[str, Any]] = {
        "default": {"monitoring_render_dir": "OUT"},
        "custom": {
            "monitoring_render_dir": "OUT",
            "monitoring_grafana_exposure": "ingress",
            "monitoring_prometheus_retention": "1w2d",
            "monitoring_prometheus_storage_size": "",
            "monitoring_chart_file": str(chart),
            "monitoring_chart_sha256": hashlib.sha256(chart.read_bytes()).hexdigest(),
            "monitoring_alertmanager_receiver": "team",
            "monitoring_alertmanager_receivers": [
                {"name": "team", "webhook_configs": [{"url": WEBHOOK}]}
            ],
        },
        "paged": {
            "monitoring_render_dir": "OUT",
            "monitoring_alertmanager_webhook_secret_id": ONCALL_SECRET,
        },
        "good-input": {},
        **{name: extra for name, (extra, _) in BAD_INPUT.items()},
    }

    def run(name: str) -> Run:
        tmp = tmp_path_factory.mktemp(name)
        extra = {k: str(tmp / "out") if v == "OUT" else v for k, v in cases[name].items()}
        extra = {**secrets_manager, **extra}
        result, report = play(tmp, unreachable_kubeconfig, **extra)
        return Run(result, report, tmp / "out", chart)

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(cases, pool.map(run, cases), strict=True))


@pytest.fixture(scope="module")
def default_render(runs: dict[str, Run]) -> tuple[dict[str, dict[str, Any]], str, str]:
    run = runs["default"]
    assert run.result.returncode == 0, run.result.stdout[-4000:] + run.result.stderr
    return rendered(run.out), run.report.read_text(), run.result.stdout


def test_rules_are_wrapped_unchanged_into_a_prometheusrule(default_render) -> None:
    objects, _, _ = default_render
    rule = objects["PrometheusRule/webapp"]
    assert rule["metadata"]["namespace"] == "monitoring"
    expected = [g for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]]
    # Templates such as {{ $labels.instance }} must reach Prometheus, not Jinja.
    assert rule["spec"]["groups"] == expected


def test_the_service_is_scraped_by_contract(default_render) -> None:
    objects, _, _ = default_render
    spec = objects["PodMonitor/webapp"]["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["webapp"]}
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "webapp"}}
    # The port the rendered Deployment serves /metrics on (WEBAPP_ADMIN_PORT).
    deployment = manifest_objects(render_all()["local"])[("Deployment", "webapp")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    admin_port = int(next(e["value"] for e in container["env"] if e["name"] == "WEBAPP_ADMIN_PORT"))
    (served,) = [p["name"] for p in container["ports"] if p["containerPort"] == admin_port]
    assert spec["podMetricsEndpoints"] == [{"port": served, "path": "/metrics"}]
    # job="webapp", which the alerts and the dashboard select on.
    assert spec["jobLabel"] == "app.kubernetes.io/name"


def test_dashboards_go_into_a_sidecar_configmap(default_render) -> None:
    objects, _, _ = default_render
    (cm,) = [o for k, o in objects.items() if k.startswith("ConfigMap/")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    # Parsed, so Grafana's own {{status}} legends prove they were not templated away.
    assert {k: json.loads(v) for k, v in cm["data"].items()} == {
        p.name: json.loads(p.read_text()) for p in DASHBOARD_FILES
    }


def test_helmchart_pins_the_chart_and_avoids_the_release_label_trap(default_render) -> None:
    objects, url, _ = default_render
    chart = objects["HelmChart/kube-prometheus-stack"]
    assert chart["apiVersion"] == "helm.cattle.io/v1"
    assert chart["metadata"]["namespace"] == "kube-system"
    spec = chart["spec"]
    assert spec["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert spec["version"] == "80.4.1"
    assert spec["targetNamespace"] == "monitoring"
    assert "chartContent" not in spec
    values = yaml.safe_load(spec["valuesContent"])
    prom = values["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "rule", "probe", "scrapeConfig"):
        assert prom[f"{kind}SelectorNilUsesHelmValues"] is False, kind
    assert prom["retention"] == "15d"
    assert (
        prom["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
        == "10Gi"
    )
    grafana = values["grafana"]
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert grafana["service"] == {"type": "NodePort", "nodePort": 30300}
    assert PASSWORD not in spec["valuesContent"]
    assert url == "http://127.0.0.1:30300/"


def test_the_node_exporter_alone_gets_a_privileged_namespace(default_render) -> None:
    objects, _, _ = default_render
    level = "pod-security.kubernetes.io/enforce"
    namespaces = {
        k: o["metadata"]["labels"] for k, o in objects.items() if k.startswith("Namespace/")
    }
    assert namespaces["Namespace/monitoring"][level] == "baseline"
    assert namespaces["Namespace/monitoring-node-exporter"][level] == "privileged"
    assert len(namespaces) == 2
    values = yaml.safe_load(objects["HelmChart/kube-prometheus-stack"]["spec"]["valuesContent"])
    assert values["nodeExporter"]["enabled"] is True
    assert values["prometheus-node-exporter"]["namespaceOverride"] == "monitoring-node-exporter"


def alertmanager_config(objects: dict[str, dict[str, Any]], directory: Path) -> Path:
    """The Alertmanager configuration the role put in its Secret, as a file amtool reads."""
    secret = objects["Secret/alertmanager-config"]
    path = directory / "alertmanager.yml"
    path.write_bytes(base64.b64decode(secret["data"]["alertmanager.yaml"]))
    return path


def amtool(*args: str) -> str:
    result = subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_alerts_go_nowhere_by_default(default_render, tmp_path: Path) -> None:
    objects, _, stdout = default_render
    config = alertmanager_config(objects, tmp_path)
    amtool("check-config", str(config))
    parsed = yaml.safe_load(config.read_text())
    assert parsed["route"]["receiver"] == "null"
    assert parsed["receivers"] == [{"name": "null"}]
    assert parsed["inhibit_rules"] == yaml.safe_load(ALERTMANAGER_FILE.read_text())["inhibit_rules"]
    assert "Secret/grafana-admin" not in objects
    assert PASSWORD not in stdout


def test_ingress_receiver_and_offline_chart(runs: dict[str, Run]) -> None:
    run = runs["custom"]
    result, report, chart, webhook = run.result, run.report, run.chart, WEBHOOK
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert webhook not in result.stdout, "a receiver's URL leaked into the log"
    objects = rendered(run.out)
    spec = objects["HelmChart/kube-prometheus-stack"]["spec"]
    assert base64.b64decode(spec["chartContent"]) == chart.read_bytes()
    assert "repo" not in spec and "version" not in spec
    values = yaml.safe_load(spec["valuesContent"])
    assert values["prometheus"]["prometheusSpec"]["retention"] == "1w2d"
    assert "storageSpec" not in values["prometheus"]["prometheusSpec"]
    ingress = values["grafana"]["ingress"]
    assert ingress["enabled"] is True and ingress["path"] == "/grafana"
    # The service's host (the lab contract's k3s_ec2_ingress_host), over HTTPS only, through
    # the admin-range filter.
    assert ingress["hosts"] == ["webapp.lab.localhost"]
    assert ingress["annotations"] == {
        "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
        "traefik.ingress.kubernetes.io/router.tls": "true",
        "traefik.ingress.kubernetes.io/router.middlewares":
            "monitoring-grafana-admin-ranges@kubernetescrd",
        # The lab contract's ACME resolver gets the host's certificate.
        "traefik.ingress.kubernetes.io/router.tls.certresolver": "lab-acme",
    }  # fmt: skip
    server = values["grafana"]["grafana.ini"]["server"]
    assert server["serve_from_sub_path"] is True
    assert server["root_url"] == "https://%(domain)s/grafana/"
    assert "service" not in values["grafana"]
    allow = objects["Middleware/grafana-admin-ranges"]
    assert allow["metadata"]["namespace"] == "monitoring"
    assert allow["spec"] == {"ipAllowList": {"sourceRange": ["127.0.0.1/32"]}}
    redirect = objects["IngressRoute/grafana-https-redirect"]["spec"]
    assert redirect["entryPoints"] == ["web"]
    [route] = redirect["routes"]
    assert route["match"] == "Host(`webapp.lab.localhost`) && PathPrefix(`/grafana`)"
    assert route["middlewares"] == [{"name": "grafana-https-redirect"}]
    assert route["services"] == [{"name": "noop@internal", "kind": "TraefikService"}]
    assert objects["Middleware/grafana-https-redirect"]["spec"]["redirectScheme"] == {
        "scheme": "https", "permanent": True,
    }  # fmt: skip
    assert report.read_text() == "https://webapp.lab.localhost/grafana/"
    config = yaml.safe_load(
        base64.b64decode(objects["Secret/alertmanager-config"]["data"]["alertmanager.yaml"])
    )
    assert config["route"]["receiver"] == "team"
    assert [r["name"] for r in config["receivers"]] == ["null", "team"]


def test_alerts_page_the_webhook_named_in_secrets_manager(
    runs: dict[str, Run], tmp_path: Path
) -> None:
    """prod's setting: the URL comes from Secrets Manager into the Alertmanager Secret only;
    every alert of the rules is routed to it, except the Watchdog."""
    run = runs["paged"]
    assert run.result.returncode == 0, run.result.stdout[-4000:] + run.result.stderr
    assert ONCALL_WEBHOOK not in run.result.stdout + run.result.stderr
    config = alertmanager_config(rendered(run.out), tmp_path)
    amtool("check-config", str(config))
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    assert receivers["oncall"]["webhook_configs"] == [
        {"url": ONCALL_WEBHOOK, "send_resolved": True}
    ]
    routes = f"--config.file={config}"
    for alert in alerts():
        labels = [f"{k}={v}" for k, v in {"alertname": alert.name, **alert.labels}.items()]
        assert amtool("config", "routes", "test", routes, *labels) == "oncall", alert.name
    assert amtool("config", "routes", "test", routes, "alertname=Watchdog") == "null"


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_refused_before_the_cluster_is_contacted(
    runs: dict[str, Run], case: str
) -> None:
    result, message = runs[case].result, BAD_INPUT[case][1]
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert message in out, result.stdout[-3000:]
    assert FIRST_CLUSTER_TASK not in result.stdout


def test_good_input_does_reach_for_the_cluster(runs: dict[str, Run]) -> None:
    """The control case: with valid settings the same run gets as far as the API server."""
    result = runs["good-input"].result
    assert result.returncode != 0
    assert f"TASK [devsecops.k3s_ec2.monitoring : {FIRST_CLUSTER_TASK}]" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_core_objects_match_the_kubernetes_135_schemas(runs: dict[str, Run]) -> None:
    # The custom resources have no offline schema; test_role_cluster.py applies them.
    files = sorted(runs["default"].out.glob("*.yml"))
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "--quiet", "-k", "1.35.0", *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_labs_scrape_job_follows_the_roles_pod_monitor(runs: dict[str, Run]) -> None:
    """The lab stands in for the chart with a real Prometheus (tests/support/labmonitoring):
    the scrape job it makes of the role's PodMonitor finds the service's pods by their labels
    and their admin port, in the service's namespace, under the job name the rules select."""
    from tests.support.labmonitoring import scrape_job

    docs = [
        d
        for f in sorted(runs["default"].out.glob("*.yml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (job,) = scrape_job(monitor)
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["webapp"]}}]
    assert job["metrics_path"] == "/metrics"
    relabel = job["relabel_configs"]
    kept = {tuple(r["source_labels"]): r["regex"] for r in relabel if r.get("action") == "keep"}
    assert kept == {
        ("__meta_kubernetes_pod_label_app_kubernetes_io_name",): "webapp",
        ("__meta_kubernetes_pod_container_port_name",): "admin",
    }
    # The jobLabel's value wins over the operator's default job name.
    (last,) = [r for r in relabel if r.get("target_label") == "job"][-1:]
    assert last["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    # Labels the operator gives every target must not also be the service's own: with
    # honor_labels off, Prometheus would rename the service's to exported_<name> and the
    # dashboard and rules would select nothing.
    from webapp import metrics

    targets = {r["target_label"] for r in relabel if "target_label" in r} | {"instance"}
    assert {"endpoint", "namespace", "pod", "container", "job"} <= targets
    own = {name for m in (metrics.REQUESTS, metrics.LATENCY) for name in m._labelnames}
    assert own and not own & targets, own & targets


def test_grafana_on_a_nodeport_gets_no_traefik_objects(default_render) -> None:
    objects, url, _ = default_render
    assert not [key for key in objects if key.split("/")[0] in ("Middleware", "IngressRoute")]
    assert url == "http://127.0.0.1:30300/"
