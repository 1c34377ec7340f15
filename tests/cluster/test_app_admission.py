"""The service's rendered manifests and admission policies on a real 1.35 API server.

Every inventory's manifests go in by server-side apply; Pod Security `restricted` and the
ValidatingAdmissionPolicy then judge the fixtures of tests/policies exactly as the
cluster would. No kubelet runs: Pods the controllers create stay Pending, so "accepted"
means admitted and stored, never that the service ran.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.cluster.kube import error_message, new_namespace, wait_for
from tests.manifests.render import INVENTORIES, documents, render_all

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

FIXTURES = Path(__file__).resolve().parents[1] / "policies" / "fixtures"
EXPECT = "policy-test.k3s-ec2-devsecops/expect"
VIA = "policy-test.k3s-ec2-devsecops/via"
BAD = sorted((FIXTURES / "bad").glob("*.yaml"))
GOOD = sorted((FIXTURES / "good").glob("*.yaml"))
FIELD_MANAGER = "controlplane-tests"
# Admission order: the namespace and the cluster-wide policies before what they govern.
FIRST = ("Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def ordered(directory: Path) -> list[dict[str, Any]]:
    docs = [doc for _, doc in documents(directory)]
    return sorted(docs, key=lambda d: FIRST.index(d["kind"]) if d["kind"] in FIRST else len(FIRST))


def apply(dyn: dynamic.DynamicClient, doc: dict[str, Any], **kwargs: Any) -> Any:
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    return dyn.server_side_apply(
        resource,
        body=doc,
        name=doc["metadata"]["name"],
        namespace=doc["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, Path]:
    return render_all()


@pytest.fixture(scope="module")
def dyn(api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api)


@pytest.fixture(scope="module")
def local_applied(dyn: dynamic.DynamicClient, rendered: dict[str, Path]) -> dict[str, Any]:
    """The `local` inventory applied: the app namespace and the policies are in place."""
    docs = ordered(rendered["local"])
    for doc in docs:
        apply(dyn, doc)
    namespace = next(d for d in docs if d["kind"] == "Namespace")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    core = client.CoreV1Api(dyn.client)
    wait_for(
        lambda: (
            core.list_namespaced_service_account(
                namespace["metadata"]["name"], field_selector="metadata.name=default"
            ).items
        ),
        "the app namespace's default ServiceAccount",
    )
    return {"namespace": namespace, "binding": binding}


@pytest.fixture(scope="module")
def policy_only_namespace(api: client.ApiClient, local_applied: dict[str, Any]) -> Iterator[str]:
    """Bound to the policy but Pod Security `privileged`: only the policy can refuse here."""
    labels = {
        **local_applied["binding"]["spec"]["matchResources"]["namespaceSelector"]["matchLabels"],
        "pod-security.kubernetes.io/enforce": "privileged",
    }
    name = new_namespace(api, "policy-only", labels)
    core = client.CoreV1Api(api)
    yield name
    core.delete_namespace(name)


def submit(
    api: client.ApiClient, dyn: dynamic.DynamicClient, obj: dict[str, Any], namespace: str
) -> None:
    """Create `obj` in `namespace` as a dry run (admission runs in full, nothing is stored).
    Fixtures marked `via: pods/ephemeralcontainers` go through that subresource, as
    `kubectl debug` does: their Pod is created first without the ephemeral containers."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    if obj["metadata"].get("annotations", {}).get(VIA) != "pods/ephemeralcontainers":
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dyn.create(resource, body=obj, namespace=namespace, dry_run="All")
        return
    core = client.CoreV1Api(api)
    ephemeral = obj["spec"].pop("ephemeralContainers")
    obj["metadata"]["name"] = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(namespace, obj)
    try:
        core.patch_namespaced_pod_ephemeralcontainers(
            obj["metadata"]["name"],
            namespace,
            {"spec": {"ephemeralContainers": ephemeral}},
            dry_run="All",
        )
    finally:
        core.delete_namespaced_pod(obj["metadata"]["name"], namespace, grace_period_seconds=0)


def refusal(api: client.ApiClient, dyn: dynamic.DynamicClient, path: Path, ns: str) -> str:
    obj = yaml.safe_load(path.read_text())
    try:
        submit(api, dyn, obj, ns)
    except (ApiException, DynamicApiError) as exc:
        return json.loads(exc.body)["message"] if exc.body else str(exc)
    raise AssertionError(f"{path.name} was admitted in {ns}")


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_manifest_server_side_applies(
    api: client.ApiClient, dyn: dynamic.DynamicClient, rendered: dict[str, Path], inventory: str
) -> None:
    docs = ordered(rendered[inventory])
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "Job", "ValidatingAdmissionPolicy"} <= kinds
    for doc in docs:
        stored = apply(dyn, doc)
        assert stored.metadata.name == doc["metadata"]["name"]
        if "managedFields" in stored.metadata:
            managers = {f["manager"] for f in stored.metadata.managedFields}
            assert FIELD_MANAGER in managers

    # The controllers take the admitted Deployment and Job further; the Pods they create
    # pass Pod Security and the policy too (they are created, then stay Pending).
    namespace = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["name"]
    job = next(d for d in docs if d["kind"] == "Job")["metadata"]["name"]
    core = client.CoreV1Api(api)

    def pods_of(prefix: str) -> list[client.V1Pod]:
        return [
            p
            for p in core.list_namespaced_pod(namespace).items
            if p.metadata.name.startswith(prefix)
        ]

    assert wait_for(lambda: pods_of(f"{deployment}-"), f"Pods of Deployment {deployment}")
    assert wait_for(lambda: pods_of(f"{job}-"), f"the Pod of Job {job}")
    assert all(p.status.phase == "Pending" for p in pods_of(deployment))


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_policy_denies_bad_fixture_with_its_message(
    api: client.ApiClient, dyn: dynamic.DynamicClient, policy_only_namespace: str, path: Path
) -> None:
    expected = json.loads(yaml.safe_load(path.read_text())["metadata"]["annotations"][EXPECT])

    def denied() -> str | None:
        # A freshly applied policy reaches the admission plugin through an informer.
        try:
            return refusal(api, dyn, path, policy_only_namespace)
        except AssertionError:
            return None

    message = wait_for(denied, f"the policy to deny {path.name}", timeout=30)
    assert "ValidatingAdmissionPolicy" in message
    # The API reports the first failed rule; the CEL suite checks the whole list.
    assert f"denied request: {expected[0]}" in message


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_app_namespace_refuses_bad_fixture(
    api: client.ApiClient, dyn: dynamic.DynamicClient, local_applied: dict[str, Any], path: Path
) -> None:
    namespace = local_applied["namespace"]["metadata"]["name"]
    expected = json.loads(yaml.safe_load(path.read_text())["metadata"]["annotations"][EXPECT])
    message = wait_for(
        lambda: _refused_or_none(api, dyn, path, namespace), f"{path.name} to be refused"
    )
    # Pod Security runs before the policy, so for a Pod it may be the one that answers.
    assert f"denied request: {expected[0]}" in message or (
        'violates PodSecurity "restricted:v1.35"' in message
    ), message


def _refused_or_none(
    api: client.ApiClient, dyn: dynamic.DynamicClient, path: Path, ns: str
) -> str | None:
    try:
        return refusal(api, dyn, path, ns)
    except AssertionError:
        return None


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_app_namespace_admits_good_fixture(
    api: client.ApiClient, dyn: dynamic.DynamicClient, local_applied: dict[str, Any], path: Path
) -> None:
    namespace = local_applied["namespace"]["metadata"]["name"]
    submit(api, dyn, yaml.safe_load(path.read_text()), namespace)


def test_pod_security_refuses_the_privileged_fixture_as_a_pod(
    api: client.ApiClient, local_applied: dict[str, Any]
) -> None:
    """The same template as a bare Pod: Pod Security answers before the policy does."""
    namespace = local_applied["namespace"]["metadata"]["name"]
    daemonset = yaml.safe_load((FIXTURES / "bad" / "privileged-container.yaml").read_text())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-container", "namespace": namespace},
        "spec": daemonset["spec"]["template"]["spec"],
    }
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).create_namespaced_pod(namespace, pod, dry_run="All")
    assert refused.value.status == 403
    message = error_message(refused.value)
    assert 'violates PodSecurity "restricted:v1.35"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message
