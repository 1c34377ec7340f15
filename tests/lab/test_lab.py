"""The local lab end to end, as `make lab` / `make lab-down` run it.

One `scripts/lab.sh up` (the whole of playbooks/site.yml against the stand-ins), then
each stage's result is checked where a user would look: resources in moto, hardening
controls and k3s files on the node container, the app's objects admitted by the test
control plane and a bad pod refused. A second `up` must report changed=0 everywhere;
`down` must leave no container, process or file behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".lab"
NODE = "k3s-ec2-local-server-1"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def lab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "lab.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def recap(output: str) -> dict[str, tuple[int, int, int]]:
    return {host: (int(c), int(u), int(f)) for host, c, u, f in RECAP.findall(output)}


def node(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", NODE, *cmd], capture_output=True, text=True, timeout=60, check=False
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def lab_env() -> dict[str, str]:
    if STATE.exists():
        pytest.fail(f"{STATE} exists: a lab runs here already; `make lab-down` first")
    return {
        **os.environ,
        "LAB_MOTO_PORT": str(free_port()),
        "LAB_PG_PORT": str(free_port()),
        "LAB_API_PORT": str(free_port()),
        "LAB_APP_PORT": str(free_port()),
    }


@pytest.fixture(scope="module")
def first_run(lab_env: dict[str, str]) -> Iterator[subprocess.CompletedProcess[str]]:
    result = lab("up", env=lab_env)
    try:
        yield result
    finally:
        if STATE.exists():
            lab("down", env=lab_env)


def test_first_run_succeeds_and_smoke_test_passes(
    first_run: subprocess.CompletedProcess[str],
) -> None:
    output = first_run.stdout + first_run.stderr
    assert first_run.returncode == 0, output[-6000:]
    assert "Smoke test passed" in output
    assert all(
        failed == 0 and unreachable == 0 for _, unreachable, failed in recap(output).values()
    )
    assert "no pod starts and the service" in output  # the lab says what the control plane means


def test_moto_holds_the_tagged_resources(first_run, lab_env: dict[str, str]) -> None:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    url = f"http://127.0.0.1:{lab_env['LAB_MOTO_PORT']}"
    tags = [
        {"Name": "tag:Project", "Values": ["k3s-ec2"]},
        {"Name": "tag:Environment", "Values": ["local"]},
    ]
    ec2 = session.client("ec2", endpoint_url=url)
    assert len(ec2.describe_vpcs(Filters=tags)["Vpcs"]) == 1
    reservations = ec2.describe_instances(
        Filters=[*tags, {"Name": "instance-state-name", "Values": ["running"]}]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    names = {t["Value"] for i in instances for t in i.get("Tags", []) if t["Key"] == "Name"}
    assert names == {NODE}
    imds = {i["MetadataOptions"]["HttpTokens"] for i in instances}
    assert imds == {"required"}, "IMDSv2 must be required"
    addresses = ec2.describe_addresses(Filters=tags)["Addresses"]
    assert [a.get("InstanceId") for a in addresses] == [instances[0]["InstanceId"]]
    rds = session.client("rds", endpoint_url=url)
    (db,) = rds.describe_db_instances()["DBInstances"]
    assert db["StorageEncrypted"] and not db["PubliclyAccessible"]
    secret = session.client("secretsmanager", endpoint_url=url).get_secret_value(
        SecretId="k3s-ec2/local/rds/master"  # pragma: allowlist secret
    )
    assert (
        json.loads(secret["SecretString"])["password"]
        == (STATE / "db-password").read_text().strip()
    )


def test_node_container_is_hardened(first_run) -> None:
    sshd = node("sshd", "-T")
    assert sshd.returncode == 0, sshd.stderr
    settings = dict(line.split(" ", 1) for line in sshd.stdout.splitlines() if " " in line)
    assert settings["permitrootlogin"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["x11forwarding"] == "no"
    assert "cbc" not in settings["ciphers"]
    # In a container the kernel settings are written, never applied to the host's kernel.
    sysctl = node("sh", "-c", "cat /etc/sysctl.d/*.conf")
    assert "vm.overcommit_memory = 1" in sysctl.stdout or "vm.overcommit_memory=1" in sysctl.stdout


def test_node_has_the_k3s_configuration(first_run) -> None:
    modes = node("stat", "-c", "%a %U", "/etc/rancher/k3s/config.yaml")
    assert modes.stdout.split() == ["600", "root"]
    config_yaml = node("cat", "/etc/rancher/k3s/config.yaml").stdout
    assert "secrets-encryption: true" in config_yaml
    assert "protect-kernel-defaults: true" in config_yaml
    assert "token-file:" in config_yaml
    unit = node("cat", "/etc/systemd/system/k3s.service").stdout
    assert "--config" in unit
    assert "--token " not in unit and "K3S_TOKEN" not in unit  # the token stays in its 0600 file


@pytest.fixture(scope="module")
def kube(first_run) -> client.ApiClient:
    return config.new_client_from_config(str(STATE / "kubeconfig"))


def test_app_objects_are_admitted(kube: client.ApiClient) -> None:
    namespace = client.CoreV1Api(kube).read_namespace("webapp")
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp")
    assert deployment.spec.template.spec.containers[0].image.startswith(
        "ghcr.io/devsecops/webapp:sha-"
    )
    policies = client.AdmissionregistrationV1Api(kube).list_validating_admission_policy()
    assert policies.items, "no ValidatingAdmissionPolicy in the cluster"


def test_bad_pod_is_refused(kube: client.ApiClient) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lab-bad-pod", "namespace": "webapp"},
        "spec": {
            "containers": [
                {
                    "name": "x",
                    "image": "docker.io/library/nginx:latest",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(kube).create_namespaced_pod("webapp", pod)
    assert refused.value.status in (400, 403, 422)
    assert "privileged" in refused.value.body


def test_second_run_changes_nothing(first_run, lab_env: dict[str, str]) -> None:
    second = lab("up", env=lab_env)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-6000:]
    counts = recap(output)
    assert counts, output[-3000:]
    assert {host: changed for host, (changed, _, _) in counts.items()} == dict.fromkeys(counts, 0)


def test_down_leaves_nothing(first_run, lab_env: dict[str, str]) -> None:
    result = lab("down", env=lab_env)
    assert result.returncode == 0, result.stderr
    assert not STATE.exists()
    assert not Path("/var/tmp/k3s-ec2-lab-postgres").exists()
    left = subprocess.run(
        ["podman", "ps", "-a", "--filter", "label=k3s-ec2-lab=1", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []
    for port in ("LAB_MOTO_PORT", "LAB_PG_PORT", "LAB_API_PORT", "LAB_APP_PORT"):
        assert not port_open(int(lab_env[port])), f"{port} still answers"
