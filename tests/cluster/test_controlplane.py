"""The Go-built control plane behaves like the k3s server our role configures.

It runs kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1, where no
node can join: Pods are created and stay Pending; nothing here claims a container ran
(test_node.py runs them).
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from kubernetes import client

from tests.cluster.kube import api_error, container, error_message, new_namespace, wait_for
from tests.support.controlplane import ControlPlane, build_binary

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def test_serves_https_on_loopback_and_refuses_anonymous(controlplane: ControlPlane) -> None:
    assert controlplane.get("/readyz") == (200, "ok")
    status, body = controlplane.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"].startswith("v1.35.")

    anonymous = ssl.create_default_context(cafile=str(controlplane.data_dir / "tls" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(controlplane.url + "/api", context=anonymous, timeout=5)  # noqa: S310
    assert refused.value.code == 401


def test_kubeconfig_works_with_the_python_client(api: client.ApiClient) -> None:
    names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system"} <= names
    assert client.VersionApi(api).get_code().minor.startswith("35")


def test_pod_security_restricted_rejects_a_privileged_pod(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ns = new_namespace(api, "psa", RESTRICTED)
    privileged = container(securityContext={"privileged": True})
    pod = {"metadata": {"name": "privileged"}, "spec": {"containers": [privileged]}}

    refused = api_error(lambda: core.create_namespaced_pod(ns, pod))

    assert refused.status == 403
    message = error_message(refused)
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message
    compliant = {"metadata": {"name": "compliant"}, "spec": {"containers": [container()]}}
    assert core.create_namespaced_pod(ns, compliant).metadata.name == "compliant"


def test_restricted_is_the_default_and_kube_system_is_exempt(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    unlabelled = new_namespace(api, "nolabel")
    root_pod = {
        "metadata": {"name": f"root-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]},
    }
    refused = api_error(lambda: core.create_namespaced_pod(unlabelled, root_pod))
    assert 'violates PodSecurity "restricted:latest"' in error_message(refused)
    assert core.create_namespaced_pod("kube-system", root_pod).metadata.namespace == "kube-system"
    core.delete_namespaced_pod(root_pod["metadata"]["name"], "kube-system")


def test_validating_admission_policy_denies_with_its_message(api: client.ApiClient) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    apps = client.AppsV1Api(api)
    suffix = uuid.uuid4().hex[:6]
    ns = new_namespace(api, "vap", {**RESTRICTED, "vap-test": suffix})
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": f"replica-limit-{suffix}"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.spec.replicas <= 5",
                        "messageExpression": "'replicas must be at most 5, got ' + "
                        "string(object.spec.replicas)",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": f"replica-limit-{suffix}"},
            "spec": {
                "policyName": f"replica-limit-{suffix}",
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"vap-test": suffix}}},
            },
        }
    )

    def deployment(name: str, replicas: int) -> dict[str, object]:
        labels = {"app": name}
        return {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}},
            },
        }

    def denied() -> str | None:
        # The policy reaches the admission plugin through an informer: retry until it bites.
        name = f"big-{uuid.uuid4().hex[:6]}"
        try:
            apps.create_namespaced_deployment(ns, deployment(name, 6))
        except client.ApiException as exc:
            return f"{exc.status} {error_message(exc)}"
        apps.delete_namespaced_deployment(name, ns)
        return None

    refusal = wait_for(denied, "the ValidatingAdmissionPolicy to deny", timeout=60)
    assert refusal.startswith("422 ")
    assert f"ValidatingAdmissionPolicy 'replica-limit-{suffix}'" in refusal
    assert "denied request: replicas must be at most 5, got 6" in refusal
    assert apps.create_namespaced_deployment(ns, deployment("small", 2)).spec.replicas == 2


def test_deployment_gets_a_replicaset_and_pods_from_the_controllers(
    api: client.ApiClient,
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    ns = new_namespace(api, "deploy", RESTRICTED)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}},
            },
        },
    )

    replicasets = wait_for(
        lambda: apps.list_namespaced_replica_set(ns).items, "the ReplicaSet of Deployment web"
    )
    assert replicasets[0].metadata.owner_references[0].name == "web"

    def two_pods() -> list[client.V1Pod] | None:
        items = core.list_namespaced_pod(ns).items
        return items if len(items) == 2 else None

    pods = wait_for(two_pods, "the ReplicaSet controller to create two Pods")
    assert {p.metadata.owner_references[0].name for p in pods} == {replicasets[0].metadata.name}
    # No node here: the scheduler has nowhere to put them, the Pods exist as objects only.
    assert all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)


def test_job_creates_a_pod(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ns = new_namespace(api, "job", RESTRICTED)
    client.BatchV1Api(api).create_namespaced_job(
        ns,
        {
            "metadata": {"name": "migrate"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container()]}},
            },
        },
    )
    pods = wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=migrate").items,
        "the Job controller to create a Pod",
    )
    assert pods[0].metadata.owner_references[0].kind == "Job"


def test_secrets_are_encrypted_at_rest_in_the_sqlite_store(
    api: client.ApiClient, controlplane: ControlPlane
) -> None:
    core = client.CoreV1Api(api)
    ns = new_namespace(api, "enc")
    marker = f"plain-{uuid.uuid4().hex}"
    core.create_namespaced_secret(ns, {"metadata": {"name": "db"}, "stringData": {"pw": marker}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"v": marker}})

    def stored(key: str) -> bytes:
        uri = f"file:{controlplane.sqlite_db}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            row = db.execute(
                "SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
        assert row is not None, f"{key} not in kine's database"
        return bytes(row[0])

    secret = stored(f"/registry/secrets/{ns}/db")
    assert secret.startswith(b"k8s:enc:aescbc:v1:aescbckey:")
    assert marker.encode() not in secret
    # The check can fail: a ConfigMap (not encrypted) shows the value in clear.
    assert marker.encode() in stored(f"/registry/configmaps/{ns}/cfg")
    assert core.read_namespaced_secret("db", ns).data["pw"]


def test_audit_log_records_requests_without_secret_bodies(
    api: client.ApiClient, controlplane: ControlPlane
) -> None:
    core = client.CoreV1Api(api)
    ns = new_namespace(api, "audit")
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})

    def events() -> list[dict[str, object]] | None:
        lines = controlplane.audit_log.read_text().splitlines()
        found = [json.loads(line) for line in lines if f'"{ns}"' in line]
        return found if any(e["objectRef"].get("resource") == "secrets" for e in found) else None

    found = wait_for(events, "audit events for the new namespace", timeout=30)
    secret_event = next(e for e in found if e["objectRef"].get("resource") == "secrets")
    assert secret_event["level"] == "Metadata"
    assert "requestObject" not in secret_event
    assert secret_event["user"]["username"] == "admin"


def test_sigterm_stops_cleanly_and_promptly() -> None:
    build_binary()
    plane = ControlPlane()
    try:
        plane.start()
        assert plane.ready_seconds is not None
        started = time.monotonic()
        assert plane.stop() == 0
        assert time.monotonic() - started < 30
        assert plane.get("/readyz")[0] == 0
    finally:
        plane.destroy()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--bind-address=0.0.0.0", "is not one address to listen on"),
        ("--bind-address=example", "is not one address to listen on"),
        ("--service-cidr=fd00::/64", "is not an IPv4 range"),
        ("--cluster-cidr=10.42.0.0/31", "is not an IPv4 range of at least 4 addresses"),
    ],
)
def test_bad_addresses_are_refused_before_anything_starts(
    flag: str, message: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("refused")
    result = subprocess.run(
        [str(build_binary()), f"--data-dir={data_dir}", flag],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert not any(data_dir.iterdir()), "it wrote files before refusing"
