"""The lab's ingress controller: Traefik, the one k3s ships, built from its Go module.

k3s deploys Traefik from its bundled chart into kube-system, with Traefik's CRDs; the k3s role's
chart configuration runs it on the first server (the node the Elastic IP reaches) and keeps each
client's address (`externalTrafficPolicy: Local`), and k3s's service load balancer publishes
ports 80 and 443 there. The lab does the same with what it has: the binary from
`tests/controlplane/traefik` (scripts/build-controlplane.sh) in a one-file image, a DaemonSet in
kube-system bound to the server node whose pod takes its ports 80 and 443 (as the load
balancer's does; a host port keeps the client's address), the chart's `traefik` IngressClass,
its Ingress and CRD providers, and the CRDs from the module the binary is built from. The pod
carries the chart's `app.kubernetes.io/name: traefik` label, so the service's NetworkPolicy
admits it as it admits the chart's on EC2. Applied once the nodes joined, before the
playbook: on EC2, k3s runs Traefik before the playbook deploys the service.

The chart values the k3s role gives k3s's Traefik (`k3s_traefik_chart_values`, resolved from the
local inventory) configure this one too, as the chart would render them: its certificate
resolvers become Traefik's flags, its configMap and secret volumes are mounted, and its
persistence is an emptyDir at /data (the lab has no volume provisioner: the ACME account and
certificates last as long as the pod). The rest (the Service's traffic policy, the node it runs
on) the host ports and the NODE argument already give.

    python -m tests.support.labingress image OUT_DIR
        write the image archive OUT_DIR/lab-ingress.tar (kept when its binary matches)
    python -m tests.support.labingress crds
        print the path of Traefik's CRDs (playbooks/lab.yml applies them, then the objects)
    python -m tests.support.labingress manifest IMAGE_REF NODE
        print the objects that run Traefik on NODE (the first server), as YAML documents
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.labmonitoring import kubectl
from tests.support.node import run
from tests.support.oci import name_by_digest, write_image_once
from tests.support.resolve import resolve

NAME = "traefik"
NAMESPACE = "kube-system"
INGRESS_CLASS = "traefik"
IMAGE_NAME = "localhost/lab-traefik"
BINARY = Path(__file__).parents[1] / "controlplane" / "bin" / "traefik"
MODULE = Path(__file__).parents[1] / "controlplane" / "traefik"
CRDS = "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml"
# What the CRD provider watches (Traefik's own RBAC reference lists the same).
CRD_RESOURCES = [
    "middlewares", "middlewaretcps", "ingressroutes", "traefikservices", "ingressroutetcps",
    "ingressrouteudps", "tlsoptions", "tlsstores", "serverstransports", "serverstransporttcps",
]  # fmt: skip
NONROOT = 65532
# Published on the server node as k3s's load balancer publishes the chart's Service.
HTTP_PORT = 80
HTTPS_PORT = 443
# The chart's labels: the service's NetworkPolicy admits pods named so.
SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": f"{NAME}-{NAMESPACE}"}
LABELS = {**SELECTOR, "app.kubernetes.io/part-of": "k3s-ec2-lab"}


def write_ingress_image(out_dir: Path) -> Path:
    """The image archive, tagged by a hash of its files: a rebuilt binary names another."""
    files = {
        "bin/traefik": (BINARY.read_bytes(), 0o755),
        "etc/passwd": (f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/:/bin/false\n".encode(), 0o644),
    }
    return write_image_once(
        out_dir, "lab-ingress", IMAGE_NAME, files, ["/bin/traefik"], f"{NONROOT}:{NONROOT}"
    )


def crd_definitions() -> Path:
    """Traefik's CRDs as its module v3.6.12 defines them (the build downloaded the module)."""
    env = {**os.environ, "PATH": f"/usr/local/go/bin:{os.environ['PATH']}"}
    module_dir = run(["go", "list", "-m", "-f", "{{.Dir}}", "github.com/traefik/traefik/v3"],
                     120, cwd=MODULE, env=env).stdout.strip()  # fmt: skip
    if not module_dir:
        raise RuntimeError(
            "the Traefik module is not downloaded: run scripts/build-controlplane.sh"
        )
    return Path(module_dir) / CRDS


def apply_crds(kubeconfig: Path) -> None:
    """Install Traefik's CRDs, as k3s does with Traefik, and wait until they are served."""
    crds = str(crd_definitions())
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=k3s-ec2-lab", "-f", crds)
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds,
            timeout=90)  # fmt: skip


def chart_values() -> dict[str, Any]:
    """What the k3s role writes into k3s's Traefik HelmChartConfig for the local inventory."""
    return resolve("local", ["k3s_traefik_chart_values"])["k3s_traefik_chart_values"]


def flags(prefix: str, settings: dict[str, Any]) -> list[str]:
    """Nested chart settings as Traefik's flags, the chart's way: lists joined by commas."""
    out = []
    for key, value in settings.items():
        if isinstance(value, dict):
            out += flags(f"{prefix}.{key}", value)
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            out.append(f"{prefix}.{key}={text}")
    return out


def render(image: str, node: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    values = values or {}
    meta = {"name": NAME, "labels": LABELS}
    args = [
        "--entryPoints.web.address=:8000/tcp",
        "--entryPoints.websecure.address=:8443/tcp",
        "--entryPoints.websecure.http.tls=true",
        "--entryPoints.traefik.address=:9000/tcp",
        "--ping=true",
        "--ping.entryPoint=traefik",
        "--providers.kubernetesingress=true",
        "--providers.kubernetescrd=true",
        # Nothing leaves this machine.
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]
    for resolver, settings in values.get("certificatesResolvers", {}).items():
        args += flags(f"--certificatesresolvers.{resolver}", settings)
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if values.get("persistence", {}).get("enabled"):
        mounts.append({"name": "data", "mountPath": values["persistence"].get("path", "/data")})
        volumes.append({"name": "data", "emptyDir": {}})
    for volume in values.get("volumes", []):
        source = ({"configMap": {"name": volume["name"]}} if volume["type"] == "configMap"
                  else {"secret": {"secretName": volume["name"]}})  # fmt: skip
        mounts.append({"name": volume["name"], "mountPath": volume["mountPath"], "readOnly": True})
        volumes.append({"name": volume["name"], **source})
    probe = {"httpGet": {"path": "/ping", "port": "traefik"}, "periodSeconds": 2}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**meta, "namespace": NAMESPACE}},
        # What the Ingress and CRD providers watch, read-only but for the Ingress status.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta,
         "rules": [
             {"apiGroups": [""], "resources": ["services", "secrets", "nodes", "configmaps"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"],
              "verbs": ["update"]},
             {"apiGroups": ["traefik.io"], "resources": CRD_RESOURCES,
              "verbs": ["get", "list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": INGRESS_CLASS, "labels": LABELS,
                      "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "traefik.io/ingress-controller"}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {**meta, "namespace": NAMESPACE},
         "spec": {
             "selector": {"matchLabels": SELECTOR},
             "template": {"metadata": {"labels": LABELS}, "spec": {
                 "serviceAccountName": NAME,
                 "nodeSelector": {"kubernetes.io/hostname": node},
                 "securityContext": {"runAsNonRoot": True, "runAsUser": NONROOT,
                                     "runAsGroup": NONROOT,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{
                     "name": NAME,
                     "image": image,
                     "imagePullPolicy": "IfNotPresent",
                     "args": args,
                     "ports": [
                         {"name": "web", "containerPort": 8000, "hostPort": HTTP_PORT},
                         {"name": "websecure", "containerPort": 8443, "hostPort": HTTPS_PORT},
                         {"name": "traefik", "containerPort": 9000},
                     ],
                     "readinessProbe": probe,
                     "livenessProbe": {**probe, "periodSeconds": 10},
                     "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                   "limits": {"memory": "256Mi"}},
                     "securityContext": {"allowPrivilegeEscalation": False,
                                         "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
                     "volumeMounts": mounts,
                 }],
                 "volumes": volumes,
             }},
         }},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.labingress")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image").add_argument("out_dir", type=Path)
    sub.add_parser("crds")
    manifest = sub.add_parser("manifest")
    manifest.add_argument("image")
    manifest.add_argument("node")
    args = parser.parse_args(argv)
    if args.command == "image":
        print(name_by_digest(write_ingress_image(args.out_dir)))
    elif args.command == "crds":
        print(crd_definitions())
    else:
        print(yaml.safe_dump_all(render(args.image, args.node, chart_values()), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
