"""The workload admission policy's CEL, evaluated against the rendered app and fixtures.

fixtures/bad/*.yaml each break one rule (or, for a privileged container, the two rules the
API forces together) in one way: through a container, an init container or an ephemeral
container, at pod or container level, via each workload kind. The annotation
`policy-test.k3s-ec2-devsecops/expect` lists the exact messages the policy must give.
The files are plain Kubernetes objects, so the control-plane suite can send the same ones
to a real API server (those marked `.../via: pods/ephemeralcontainers` through that
subresource, since the API refuses ephemeral containers on create).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.render import INVENTORIES, documents
from tests.policies.cel import PolicyEvaluator

FIXTURES = Path(__file__).parent / "fixtures"
EXPECT = "policy-test.k3s-ec2-devsecops/expect"
BAD = sorted((FIXTURES / "bad").glob("*.yaml"))
GOOD = sorted((FIXTURES / "good").glob("*.yaml"))
# Kind of each fixture -> the resource name the policy must match for it to apply at all.
RESOURCES = {
    "Pod": ("", "pods"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}
POD_TEMPLATE_KINDS = set(RESOURCES) - {"Pod"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def policy_documents(directory: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for _, doc in documents(directory, "policies.yaml")}


@pytest.fixture(scope="module")
def policies(rendered: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return policy_documents(rendered["local"])


@pytest.fixture(scope="module")
def evaluator(policies: dict[str, dict[str, Any]]) -> PolicyEvaluator:
    return PolicyEvaluator(policies["ValidatingAdmissionPolicy"])


def matched_resources(policy: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (group, resource)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        if {"CREATE", "UPDATE"} <= set(rule["operations"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_enough_bad_fixtures() -> None:
    assert len(BAD) >= 20
    assert len({load(p)["kind"] for p in BAD}) >= 5


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_rendered_app_is_admitted(
    rendered: dict[str, Path], evaluator: PolicyEvaluator, inventory: str
) -> None:
    workloads = [
        (path.name, doc)
        for path, doc in documents(rendered[inventory])
        if doc["kind"] in POD_TEMPLATE_KINDS
    ]
    assert {doc["kind"] for _, doc in workloads} == {"Deployment", "Job"}
    for name, doc in workloads:
        assert evaluator.denials(doc) == [], name


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_fixture_is_admitted(evaluator: PolicyEvaluator, path: Path) -> None:
    assert evaluator.denials(load(path)) == []


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_fixture_is_denied_with_its_message(evaluator: PolicyEvaluator, path: Path) -> None:
    obj = load(path)
    expected = json.loads(obj["metadata"]["annotations"][EXPECT])
    assert expected, "a bad fixture names the messages it expects"
    assert [d.message for d in evaluator.denials(obj)] == expected


@pytest.mark.parametrize("path", BAD + GOOD, ids=lambda p: p.stem)
def test_policy_matches_every_fixture_kind(policies: dict[str, dict[str, Any]], path: Path) -> None:
    matched = matched_resources(policies["ValidatingAdmissionPolicy"])
    assert RESOURCES[load(path)["kind"]] in matched
    assert ("", "pods/ephemeralcontainers") in matched, "kubectl debug must not bypass the policy"


def test_binding_denies_and_selects_only_opted_in_namespaces(
    policies: dict[str, dict[str, Any]], rendered: dict[str, Path]
) -> None:
    binding = policies["ValidatingAdmissionPolicyBinding"]["spec"]
    assert binding["policyName"] == policies["ValidatingAdmissionPolicy"]["metadata"]["name"]
    assert binding["validationActions"] == ["Deny"]
    selector = binding["matchResources"]["namespaceSelector"]
    assert set(selector) == {"matchLabels"}, "a plain label match keeps system namespaces out"
    namespace = next(d for _, d in documents(rendered["local"]) if d["kind"] == "Namespace")
    assert selector["matchLabels"].items() <= namespace["metadata"]["labels"].items()
    system_labels = {"kubernetes.io/metadata.name": "kube-system"}
    assert not selector["matchLabels"].items() <= system_labels.items()


def test_owner_comes_from_the_inventory(rendered: dict[str, Path]) -> None:
    evaluator = PolicyEvaluator(
        policy_documents(rendered["dev-other-owner"])["ValidatingAdmissionPolicy"]
    )
    admitted = load(GOOD[0])
    admitted_image = admitted["spec"]["containers"][0]["image"]
    assert [d.message for d in evaluator.denials(admitted)] == [
        f"container 'app' uses image '{admitted_image}': images must come from ghcr.io/acme/"
    ]
