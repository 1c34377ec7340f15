"""Static checks of the rendered manifests: schema, checkov, and what each inventory deploys."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.manifests.render import (
    INVENTORIES,
    OTHER_IMAGE,
    SOURCE_REVISION,
    TEST_IMAGE,
    ansible_env,
    objects,
)
from tests.support import labingress
from tests.support.resolve import resolve

KUBERNETES_VERSION = "1.35.0"  # k3s v1.35.4+k3s1 (docs/contract.md)


SETTINGS = (
    "app_deploy_exposure",
    "app_deploy_nodeport",
    "app_deploy_ingress_host",
    "app_deploy_ingress_tls_secret",
    "app_deploy_ingress_acme_resolver",
    "app_deploy_db_egress_cidrs",
    "app_deploy_ingress_rate_average",
    "app_deploy_ingress_rate_burst",
)


@functools.cache
def deploy_settings(inventory: str) -> dict[str, Any]:
    """The app_deploy settings of the inventory as the role sees them."""
    return resolve(inventory, SETTINGS)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_kubernetes_validate_strict(rendered: dict[str, Path], inventory: str) -> None:
    files = sorted(str(p) for p in rendered[inventory].glob("*.yaml"))
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *files],
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every object was really checked, not skipped as an unknown kind; but for Traefik's
    # Middleware, which the API server checks against Traefik's CRD (tests/cluster/).
    kinds = [(doc["apiVersion"], doc["kind"]) for doc in objects(rendered[inventory]).values()]
    traefik = [kind for kind in kinds if kind[0].startswith("traefik.io/")]
    assert result.stdout.count(" passed for resource ") == len(kinds) - len(traefik)
    assert result.stdout.count("Couldn't find schema") == len(traefik), result.stdout


def test_checkov_finds_no_failed_check(rendered: dict[str, Path]) -> None:
    base = rendered["local"].parent
    result = subprocess.run(
        [
            "checkov",
            "-d",
            str(base),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--compact",
            "--skip-download",
        ],
        env={**ansible_env(), "BC_SKIP_MAPPING": "TRUE"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    start = result.stdout.find("{")
    report = json.loads(result.stdout[start:])
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0, report["results"]["parsing_errors"]
    assert summary["passed"] > 100 * len(INVENTORIES) / 2, summary
    # A skip is allowed only with a written reason, kept beside the object.
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped


def test_kubectl_client_dry_run(rendered: dict[str, Path]) -> None:
    kubeconfig = os.environ.get("K3S_EC2_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip(
            "kubectl apply --dry-run=client still asks a server for API discovery; with no "
            "server here the control-plane suite covers it with a server-side dry run "
            "(set K3S_EC2_TEST_KUBECONFIG to run it against a cluster)"
        )
    for inventory in INVENTORIES:
        result = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                kubeconfig,
                "apply",
                "--dry-run=client",
                "-f",
                str(rendered[inventory]),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_exposure_follows_the_inventory(rendered: dict[str, Path], inventory: str) -> None:
    settings = deploy_settings(inventory)
    objs = objects(rendered[inventory])
    service = objs[("Service", "webapp")]
    exposure = settings["app_deploy_exposure"]
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    if exposure in ("nodeport", "both"):
        assert service["spec"]["type"] == "NodePort"
        assert http["nodePort"] == settings["app_deploy_nodeport"]
    else:
        assert service["spec"]["type"] == "ClusterIP"
        assert "nodePort" not in http
    ingress = objs.get(("Ingress", "webapp"))
    if exposure in ("ingress", "both"):
        assert ingress is not None
        assert ingress["spec"]["rules"][0]["host"] == settings["app_deploy_ingress_host"]
        assert ingress["spec"]["ingressClassName"] == "traefik"
        resolver = settings["app_deploy_ingress_acme_resolver"]
        tls = bool(settings["app_deploy_ingress_tls_secret"] or resolver)
        assert bool(ingress["spec"].get("tls")) == tls
        annotations = ingress["metadata"].get("annotations", {})
        certresolver = annotations.get("traefik.ingress.kubernetes.io/router.tls.certresolver")
        if tls and resolver:
            # The certificate comes from Traefik's ACME resolver, not from a Secret.
            assert certresolver == resolver
            assert ingress["spec"]["tls"] == [{"hosts": [settings["app_deploy_ingress_host"]]}]
        elif tls:
            assert certresolver is None
            assert (
                ingress["spec"]["tls"][0]["secretName"] == settings["app_deploy_ingress_tls_secret"]
            )
        middlewares = annotations.get("traefik.ingress.kubernetes.io/router.middlewares")
        if settings["app_deploy_ingress_rate_average"]:
            # Every client address is held to the limit (Traefik's name for the Middleware).
            limit = objs[("Middleware", "webapp-rate-limit")]
            assert limit["metadata"]["namespace"] == ingress["metadata"]["namespace"]
            assert limit["spec"]["rateLimit"] == {
                "average": settings["app_deploy_ingress_rate_average"],
                "burst": settings["app_deploy_ingress_rate_burst"],
                "period": "1s",
            }
            namespace = ingress["metadata"]["namespace"]
            assert middlewares == f"{namespace}-webapp-rate-limit@kubernetescrd"
        else:
            assert ("Middleware", "webapp-rate-limit") not in objs
            assert middlewares is None
        redirect = objs.get(("IngressRoute", "webapp-https-redirect"))
        if tls:
            # HTTPS only on the TLS entry point; plain HTTP to the host gets only a redirect,
            # from Traefik itself (its no-op service), whether or not a pod is ready.
            assert annotations["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"
            assert objs[("Middleware", "webapp-https-redirect")]["spec"] == {
                "redirectScheme": {"scheme": "https", "permanent": True}
            }
            assert redirect["metadata"]["namespace"] == ingress["metadata"]["namespace"]
            assert redirect["spec"] == {
                "entryPoints": ["web"],
                "routes": [
                    {
                        "match": f"Host(`{settings['app_deploy_ingress_host']}`)",
                        "kind": "Rule",
                        "middlewares": [{"name": "webapp-https-redirect"}],
                        "services": [{"name": "noop@internal", "kind": "TraefikService"}],
                    }
                ],
            }
        else:
            assert redirect is None
            assert ("Middleware", "webapp-https-redirect") not in objs
    else:
        assert ingress is None
        assert not [key for key in objs if key[0] in ("Ingress", "IngressRoute", "Middleware")]


def test_a_rate_limit_joins_the_tls_router(rendered: dict[str, Path]) -> None:
    """Off in prod by default (tested above); set, it joins the TLS annotations."""
    objs = objects(rendered["prod-rate-limit"])
    annotations = objs[("Ingress", "webapp")]["metadata"]["annotations"]
    assert annotations["traefik.ingress.kubernetes.io/router.middlewares"] == (
        "webapp-webapp-rate-limit@kubernetescrd"
    )
    assert annotations["traefik.ingress.kubernetes.io/router.tls"] == "true"
    assert objs[("Middleware", "webapp-rate-limit")]["spec"]["rateLimit"]["average"] == 20


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_deployment_is_hardened(rendered: dict[str, Path], inventory: str) -> None:
    objs = objects(rendered[inventory])
    deployment = objs[("Deployment", "webapp")]
    spec = pod_spec(deployment)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["topologySpreadConstraints"]
    (container,) = spec["containers"]
    assert container["image"] == TEST_IMAGE
    env = {e["name"]: e for e in container["env"]}
    admin_port = int(env["WEBAPP_ADMIN_PORT"]["value"])
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "admin", "containerPort": admin_port, "protocol": "TCP"},
    ]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    # The probes use the admin port: /readyz answers nowhere else.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # Writable places on a read-only root: each is an emptyDir mount.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]["value"]):
        assert "emptyDir" in volumes[mounts[path]], path


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_hsts_and_secure_cookies_only_where_every_client_uses_tls(
    rendered: dict[str, Path], inventory: str
) -> None:
    settings = deploy_settings(inventory)
    (container,) = pod_spec(objects(rendered[inventory])[("Deployment", "webapp")])["containers"]
    secure = next(e["value"] for e in container["env"] if e["name"] == "WEBAPP_COOKIE_SECURE")
    tls_only = settings["app_deploy_exposure"] == "ingress" and bool(
        settings["app_deploy_ingress_tls_secret"] or settings["app_deploy_ingress_acme_resolver"]
    )
    assert secure == ("true" if tls_only else "false")
    if inventory == "prod":
        assert secure == "true", "prod is served through its TLS Ingress only"


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_no_service_or_ingress_leads_to_the_admin_port(
    rendered: dict[str, Path], inventory: str
) -> None:
    objs = objects(rendered[inventory])
    (container,) = pod_spec(objs[("Deployment", "webapp")])["containers"]
    admin = next(p for p in container["ports"] if p["name"] == "admin")
    targets = [
        port.get("targetPort", port["port"])
        for (kind, _), obj in objs.items()
        if kind == "Service"
        for port in obj["spec"]["ports"]
    ]
    assert targets and not {"admin", admin["containerPort"]} & set(targets), targets
    for (kind, _), obj in objs.items():
        if kind == "Ingress":
            backends = [
                p["backend"]["service"] for r in obj["spec"]["rules"] for p in r["http"]["paths"]
            ]
            assert all(b["port"] == {"name": "http"} for b in backends), backends


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_database_settings_come_from_the_secret(rendered: dict[str, Path], inventory: str) -> None:
    objs = objects(rendered[inventory])
    job = next(o for (kind, _), o in objs.items() if kind == "Job")
    for obj in (objs[("Deployment", "webapp")], job):
        spec = pod_spec(obj)
        container = spec["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert "DATABASE_URL" not in env
        for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "webapp-db", name
        password_file = Path(env["PGPASSWORD_FILE"]["value"])
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == str(password_file.parent)
        )
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "webapp-db"
        assert volume["secret"]["items"] == [{"key": "password", "path": password_file.name}]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "webapp.migrate",
    ]


def test_migration_job_name_follows_the_image_and_its_settings(rendered: dict[str, Path]) -> None:
    def job_name(directory: Path) -> str:
        (name,) = [name for (kind, name) in objects(directory) if kind == "Job"]
        assert name.startswith("webapp-migrate-")
        return name

    deployment = objects(rendered["dev-other-image"])[("Deployment", "webapp")]
    assert pod_spec(deployment)["containers"][0]["image"] == OTHER_IMAGE
    assert job_name(rendered["dev"]) != job_name(rendered["dev-other-image"]), (
        "a new image must get a new migration Job"
    )
    # A Job's pod template is immutable: other limits (prod) need another Job, while the
    # same image and settings (local and dev) give the same name, so a re-run re-applies it.
    assert job_name(rendered["prod"]) != job_name(rendered["dev"])
    local_job = objects(rendered["local"])[("Job", job_name(rendered["local"]))]["spec"]
    dev_job = objects(rendered["dev"])[("Job", job_name(rendered["dev"]))]["spec"]
    assert local_job == dev_job
    assert job_name(rendered["local"]) == job_name(rendered["dev"])


def test_the_deployment_names_the_commit_that_deployed_it(rendered: dict[str, Path]) -> None:
    """CD rolls back by re-running the recorded commit; by hand nothing is recorded."""
    annotation = "k3s-ec2-devsecops/source-revision"
    recorded = objects(rendered["dev-other-image"])[("Deployment", "webapp")]["metadata"]
    assert recorded["annotations"][annotation] == SOURCE_REVISION
    by_hand = objects(rendered["dev"])[("Deployment", "webapp")]["metadata"]
    assert annotation not in by_hand["annotations"]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_network_policies(rendered: dict[str, Path], inventory: str) -> None:
    settings = deploy_settings(inventory)
    objs = objects(rendered[inventory])
    deny = objs[("NetworkPolicy", "default-deny-all")]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    allow = objs[("NetworkPolicy", "webapp-allow-http")]["spec"]
    sources = [rule["from"][0] for rule in allow["ingress"]]
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    # Prometheus reaches the admin port only; every other source the public port only.
    for rule in allow["ingress"]:
        port = "admin" if rule["from"] == [prometheus] else "http"
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}], rule
    assert prometheus in sources
    assert any(
        s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "kube-system"
        for s in sources
    )
    ip_blocks = [
        s["ipBlock"]["cidr"] for rule in allow["ingress"] for s in rule["from"] if "ipBlock" in s
    ]
    if settings["app_deploy_exposure"] == "ingress":
        assert ip_blocks == [], "without a NodePort nothing outside the cluster reaches the pods"
    else:
        assert ip_blocks

    egress = objs[("NetworkPolicy", "webapp-allow-egress")]["spec"]["egress"]
    ports = sorted((p["port"], p["protocol"]) for rule in egress for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP")]
    db_rule = next(r for r in egress if r["ports"][0]["port"] == 5432)
    assert [t["ipBlock"]["cidr"] for t in db_rule["to"]] == settings["app_deploy_db_egress_cidrs"]


def test_the_labs_traefik_is_what_the_ingress_and_the_policy_name(
    rendered: dict[str, Path],
) -> None:
    """The lab's stand-in for k3s's Traefik serves the Ingress's class and is the peer the
    service's NetworkPolicy admits to its public port (or the lab's Ingress answers nothing)."""
    objs = objects(rendered["local"])
    lab = {
        o["kind"]: o
        for o in labingress.render("localhost/lab-traefik@sha256:" + "0" * 64, "node-1")
    }
    # Every entry point the Ingresses name is one of the lab's Traefik (k3s's chart names the same).
    args = lab["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["args"]
    entry_points = {a.split("=")[0].split(".")[1] for a in args if a.startswith("--entryPoints.")}
    named = {
        o["metadata"].get("annotations", {}).get("traefik.ingress.kubernetes.io/router.entrypoints")
        for key, o in objs.items()
        if key[0] == "Ingress"
    } | {e for key, o in objs.items() if key[0] == "IngressRoute" for e in o["spec"]["entryPoints"]}
    assert named - {None} == {"web", "websecure"} <= entry_points
    assert (
        objs[("Ingress", "webapp")]["spec"]["ingressClassName"]
        == (lab["IngressClass"]["metadata"]["name"])
    )
    allow = objs[("NetworkPolicy", "webapp-allow-http")]["spec"]["ingress"]
    traefik = lab["DaemonSet"]
    pod_labels = traefik["spec"]["template"]["metadata"]["labels"]
    namespace = {"kubernetes.io/metadata.name": traefik["metadata"]["namespace"]}
    admitted = [
        rule["ports"]
        for rule in allow
        for peer in rule["from"]
        if peer.get("namespaceSelector", {}).get("matchLabels") == namespace
        and peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert admitted == [[{"port": "http", "protocol": "TCP"}]]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_namespace_enforces_restricted_and_opts_into_policies(
    rendered: dict[str, Path], inventory: str
) -> None:
    objs = objects(rendered[inventory])
    labels = objs[("Namespace", "webapp")]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    binding = next(o for (kind, _), o in objs.items() if kind == "ValidatingAdmissionPolicyBinding")
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector.items() <= labels.items()


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_hpa_and_pdb_leave_room_for_disruptions(rendered: dict[str, Path], inventory: str) -> None:
    objs = objects(rendered[inventory])
    hpa = objs[("HorizontalPodAutoscaler", "webapp")]["spec"]
    pdb = objs[("PodDisruptionBudget", "webapp")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "webapp",
    }
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"] <= hpa["maxReplicas"]
