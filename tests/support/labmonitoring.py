"""The lab's stand-in for the kube-prometheus-stack chart, which cannot be had here.

Prometheus is built from its Go module with Kubernetes discovery (scripts/build-controlplane.sh:
Debian's package leaves Kubernetes discovery out); Alertmanager is this machine's Debian binary
(`prometheus-alertmanager`). Both are packed into one image, with the C library Debian's binary
links against, and run as pods in the monitoring namespace. They are configured from what the
monitoring role stored in the cluster, read back, never copied: the PodMonitor becomes the
scrape job the Prometheus operator would make of it, the PrometheusRule's groups the rule file,
the chart's values the scrape and evaluation interval and the retention, and the Alertmanager
Secret is mounted as it is. The Prometheus pod carries the chart's `app.kubernetes.io/name:
prometheus` label, so the service's NetworkPolicy admits it to the admin port as it would
admit the chart's.

    python -m tests.support.labmonitoring image OUT_DIR
        write the image archive OUT_DIR/lab-monitoring.tar (kept when its binaries match)
    python -m tests.support.labmonitoring manifest KUBECONFIG IMAGE_REF
        print the objects that run both as YAML documents (playbooks/lab-ready.yml applies
        them); nothing where the monitoring stage has not run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.node import run
from tests.support.oci import name_by_digest, write_image_once

# The HelmChart the monitoring role makes (its default release name): its targetNamespace is
# where the role put the PodMonitor, the rules and the Alertmanager Secret, and the lab's pods.
RELEASE = yaml.safe_load(
    (Path(__file__).parents[2] / "collections/ansible_collections/devsecops/k3s_ec2/roles"
     / "monitoring/defaults/main.yml").read_text()
)["monitoring_release_name"]  # fmt: skip
PROMETHEUS = "lab-prometheus"
ALERTMANAGER = "lab-alertmanager"
# On the lab nodes' addresses only (the nodes' firewall opens the NodePort range).
PROMETHEUS_NODEPORT = 30090
ALERTMANAGER_NODEPORT = 30093
IMAGE_NAME = "localhost/lab-monitoring"
NOBODY = 65534
BINARIES = {
    "bin/prometheus": str(Path(__file__).parents[1] / "controlplane" / "bin" / "prometheus"),
    "bin/alertmanager": "/usr/bin/prometheus-alertmanager",
    # Debian builds Alertmanager with cgo: it needs the C library and its loader, nothing else.
    "lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
    "lib64/ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2",
}
# Debian's Alertmanager reads its notification templates from disk, not from the binary.
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager")


def write_monitoring_image(out_dir: Path) -> Path:
    """The image archive, tagged by a hash of its files: an upgraded package names another."""
    files = {
        path: (Path(source).read_bytes(), 0o755 if path.startswith(("bin/", "lib")) else 0o644)
        for path, source in BINARIES.items()
    }
    for template in sorted(ALERTMANAGER_TEMPLATES.glob("*.tmpl")):
        files[str(template.relative_to("/"))] = (template.read_bytes(), 0o644)
    files["etc/passwd"] = (f"nobody:x:{NOBODY}:{NOBODY}:nobody:/:/bin/false\n".encode(), 0o644)
    return write_image_once(
        out_dir, "lab-monitoring", IMAGE_NAME, files, ["/bin/prometheus"], f"{NOBODY}:{NOBODY}"
    )


def kubectl(kubeconfig: Path, *argv: str, stdin: str | None = None, timeout: float = 60) -> str:
    return run(["kubectl", f"--kubeconfig={kubeconfig}", *argv], timeout, input=stdin).stdout


def _get(kubeconfig: Path, kind: str, namespace: str) -> list[dict[str, Any]]:
    return json.loads(kubectl(kubeconfig, "-n", namespace, "get", kind, "-o", "json"))["items"]


def _label(name: str) -> str:
    """A pod label as Prometheus's Kubernetes discovery names it."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in name)


def scrape_job(monitor: dict[str, Any]) -> list[dict[str, Any]]:
    """The scrape configs the Prometheus operator makes of a PodMonitor (the fields ours uses)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = _namespaces(monitor)
    keep = [
        {"action": "keep", "source_labels": [_label(k)], "regex": v}
        for k, v in sorted(spec["selector"].get("matchLabels", {}).items())
    ]
    jobs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [
            *keep,
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
             "regex": "(Failed|Succeeded)"},
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": endpoint["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"],
             "target_label": "container"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
        ]  # fmt: skip
        if spec.get("jobLabel"):
            relabel.append(
                {
                    "source_labels": [_label(spec["jobLabel"])],
                    "target_label": "job",
                    "regex": "(.+)",
                }
            )
        # The operator names the port in `endpoint`; a scraped series' own `endpoint` label
        # would become `exported_endpoint` (honor_labels is off), which is why the service
        # labels its routes `route`.
        relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
        jobs.append(
            {
                "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{index}",
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": namespaces}}],
                "relabel_configs": relabel,
            }
        )
    return jobs


def monitoring_chart(kubeconfig: Path) -> dict[str, Any] | None:
    """The monitoring stage's HelmChart, or None where that stage has not run."""
    charts = [c for c in _get(kubeconfig, "helmcharts", "kube-system")
              if c["metadata"]["name"] == RELEASE]  # fmt: skip
    return charts[0] if charts else None


def render(kubeconfig: Path, image: str, chart: dict[str, Any]) -> list[dict[str, Any]]:
    namespace = chart["spec"]["targetNamespace"]
    values = yaml.safe_load(chart["spec"].get("valuesContent") or "{}") or {}
    prometheus_spec = values.get("prometheus", {}).get("prometheusSpec", {})
    interval = prometheus_spec.get("scrapeInterval", "30s")
    config_secret = values["alertmanager"]["alertmanagerSpec"]["configSecret"]
    monitors = _get(kubeconfig, "podmonitors", namespace)
    groups = [g for rule in _get(kubeconfig, "prometheusrules", namespace)
              for g in rule["spec"]["groups"]]  # fmt: skip
    if not monitors or not groups:
        raise RuntimeError(
            "the monitoring role's PodMonitor and PrometheusRule are not in the cluster"
        )
    prometheus_config = {
        "global": {
            "scrape_interval": interval,
            # The operator's default evaluation interval follows the chart's 30s.
            "evaluation_interval": prometheus_spec.get("evaluationInterval", interval),
        },
        "rule_files": ["/etc/prometheus/rules.yml"],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{ALERTMANAGER}.{namespace}.svc:9093"]}]}
            ]
        },
        "scrape_configs": [job for monitor in monitors for job in scrape_job(monitor)],
    }
    labels = {"app.kubernetes.io/part-of": "k3s-ec2-lab"}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": PROMETHEUS, "namespace": namespace, "labels": labels}},
        # Least privilege: pods are listed in the namespaces the PodMonitors name, nowhere else.
        *[obj for ns in sorted({n for m in monitors for n in _namespaces(m)})
          for obj in _discovery_role(ns, labels, namespace)],
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": PROMETHEUS, "namespace": namespace, "labels": labels},
         "data": {"prometheus.yml": yaml.safe_dump(prometheus_config, sort_keys=False),
                  "rules.yml": yaml.safe_dump({"groups": groups}, sort_keys=False)}},
        _deployment(
            PROMETHEUS, image, "prometheus", 9090, labels,
            ["/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml",
             "--storage.tsdb.path=/data", "--web.listen-address=:9090",
             f"--storage.tsdb.retention.time={prometheus_spec.get('retention', '2d')}"],
            {"name": "config", "configMap": {"name": PROMETHEUS}}, "/etc/prometheus", "/-/ready",
            service_account=PROMETHEUS,
        ),
        _deployment(
            ALERTMANAGER, image, "alertmanager", 9093, labels,
            ["/bin/alertmanager", "--config.file=/etc/alertmanager/alertmanager.yaml",
             "--storage.path=/data", "--web.listen-address=:9093",
             # One replica: no gossip port to open.
             "--cluster.listen-address="],
            {"name": "config", "secret": {"secretName": config_secret}}, "/etc/alertmanager",
            "/-/ready",
        ),
        _service(PROMETHEUS, "prometheus", 9090, PROMETHEUS_NODEPORT, labels),
        _service(ALERTMANAGER, "alertmanager", 9093, ALERTMANAGER_NODEPORT, labels),
    ]  # fmt: skip
    for obj in objects:
        obj["metadata"].setdefault("namespace", namespace)
    return objects


def _namespaces(monitor: dict[str, Any]) -> list[str]:
    selector = monitor["spec"].get("namespaceSelector", {})
    return selector.get("matchNames", [monitor["metadata"]["namespace"]])


def _discovery_role(
    namespace: str, labels: dict[str, str], prometheus_namespace: str
) -> list[dict[str, Any]]:
    name = f"{PROMETHEUS}-discovery"
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS,
                       "namespace": prometheus_namespace}]},
    ]  # fmt: skip


def _deployment(
    name: str,
    image: str,
    app: str,
    port: int,
    labels: dict[str, str],
    command: list[str],
    config_volume: dict[str, Any],
    config_path: str,
    ready_path: str,
    service_account: str = "",
) -> dict[str, Any]:
    selector = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": bool(service_account),
        "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY,
                            "fsGroup": NOBODY, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": app,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": command,
            "ports": [{"name": "web", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": ready_path, "port": "web"}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"memory": "512Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "config", "mountPath": config_path, "readOnly": True},
                             {"name": "data", "mountPath": "/data"}],
        }],
        "volumes": [config_volume, {"name": "data", "emptyDir": {}}],
    }  # fmt: skip
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, **selector}},
        "spec": {
            "replicas": 1,
            # A new configuration restarts the pod (a Deployment's template must change).
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": {**labels, **selector}}, "spec": pod_spec},
        },
    }


def _service(name: str, app: str, port: int, nodeport: int, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "NodePort",
            "selector": {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name},
            "ports": [{"name": "web", "port": port, "targetPort": "web", "nodePort": nodeport}],
        },
    }


def manifest(kubeconfig: Path, image: str) -> list[dict[str, Any]]:
    """The lab's Prometheus and Alertmanager as the monitoring stage configured them; none
    where that stage has not run (nothing to configure them from)."""
    chart = monitoring_chart(kubeconfig)
    if chart is None:
        return []
    namespace = chart["spec"]["targetNamespace"]
    objects = render(kubeconfig, image, chart)
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    checksum = hashlib.sha256(json.dumps(config["data"], sort_keys=True).encode()).hexdigest()
    # Neither reads its configuration again by itself: a new one restarts the pod.
    secret = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == ALERTMANAGER
    )
    secret_name = secret["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    secret_version = kubectl(kubeconfig, "-n", namespace, "get", "secret", secret_name,
                             "-o", "jsonpath={.metadata.resourceVersion}")  # fmt: skip
    restart_on = {PROMETHEUS: checksum[:16], ALERTMANAGER: secret_version}
    for obj in objects:
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]["metadata"]
            template["annotations"] = {"k3s-ec2-lab/config": restart_on[obj["metadata"]["name"]]}
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.labmonitoring")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image").add_argument("out_dir", type=Path)
    rendering = sub.add_parser("manifest")
    rendering.add_argument("kubeconfig", type=Path)
    rendering.add_argument("image")
    args = parser.parse_args(argv)
    if args.command == "image":
        archive = write_monitoring_image(args.out_dir)
        print(name_by_digest(archive))
    else:
        print(yaml.safe_dump_all(manifest(args.kubeconfig, args.image), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
