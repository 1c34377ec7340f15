"""The local lab end to end, as `make lab` / `make lab-down` run it.

One `scripts/lab.sh up` with the optional agent (the whole of playbooks/site.yml against
the stand-ins), then each stage's result is checked where a user would look: resources
in moto, hardening controls and k3s files on the node containers, the app's objects
admitted by the test control plane and a bad pod refused. Then what a user does next:
a second `up` and a `--check --diff` run must report changed=0 everywhere, a stage run
alone (a tag, its own playbook) must find what the earlier stages published, `--limit`
must touch only the nodes named, and `down` must leave no container, network, process
or file behind. Timings are for bench/lab.sh, not asserted here.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from playwright.sync_api import sync_playwright

from tests.cluster.kube import connections_from_pod, wait_for
from tests.monitoring.sources import alerts
from tests.support import labmonitoring
from tests.support.browser import CHROMIUM, FLAGS, spki_pin
from tests.support.controlplane import lab_subnet
from tests.support.load import SteadyLoad
from tests.support.node import CLUSTER_DOMAIN, read_sysctls
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".lab"
# The lab's Ingress certificate and its CA (scripts/lab.sh make_ingress_tls).
# The lab's ACME CA (Pebble): the CA of its own API, and the root and intermediate it made at
# its start, which signed the Ingress host's certificate (lab.sh keeps them).
ACME = STATE / "acme"
ACME_ROOT = ACME / "root.pem"
ACME_INTERMEDIATE = ACME / "intermediate.pem"
SERVER = "k3s-ec2-local-server-1"
AGENT = "k3s-ec2-local-agent-1"
NETWORK = "k3s-ec2-lab"
BANNER = "/etc/issue.net"
PG_STATE = "/var/tmp/k3s-ec2-lab-postgres"
# The service's serving pods, as its Service selects them.
SERVING = "app.kubernetes.io/name=webapp,app.kubernetes.io/component=server"
# The kubelets change three host-wide kernel values; `down` must put back these.
HOST_SYSCTLS_BEFORE_THE_LAB = read_sysctls()
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


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def changed_by_host(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Changed count per host summed over the run's PLAY RECAPs (the control-plane lab
    smoke-tests in a second playbook), after checking every one succeeded."""
    output = output_of(result)
    assert result.returncode == 0, output[-6000:]
    recaps = RECAP.findall(output)
    assert recaps, output[-3000:]
    assert all(u == "0" and f == "0" for _, _, u, f in recaps), output[-3000:]
    changed: dict[str, int] = {}
    for host, count, _, _ in recaps:
        changed[host] = changed.get(host, 0) + int(count)
    return changed


def changed_tasks(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Each task that reported a change, with the host, for a failure's message."""
    task, found = "", []
    for line in output_of(result).splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:"):
            found.append(f"{task} {line}")
    return found


def node(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", name, *cmd], capture_output=True, text=True, timeout=60, check=False
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as built and installed by a user: the lab runs this copy."""
    work = tmp_path_factory.mktemp("collection")
    for cmd in (
        ["bash", str(ROOT / "scripts" / "build-collection.sh"), str(work / "dist")],
        ["ansible-galaxy", "collection", "install", "--no-deps", "--force",
         "-p", str(work / "installed"), str(work / "dist" / "devsecops-k3s_ec2-0.1.0.tar.gz")],
    ):  # fmt: skip
        result = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return work / "installed"


@pytest.fixture(scope="module")
def lab_env(installed_collection: Path) -> dict[str, str]:
    if STATE.exists():
        pytest.fail(f"{STATE} exists: a lab runs here already; `make lab-down` first")
    return {
        **os.environ,
        "LAB_COLLECTIONS_PATH": str(installed_collection),
        "LAB_AGENTS": "1",
        "LAB_MOTO_PORT": str(free_port()),
        "LAB_PG_PORT": str(free_port()),
        "LAB_API_PORT": str(free_port()),
        "LAB_ACME_MANAGEMENT_PORT": str(free_port()),
        "LAB_ACME_DNS_PORT": str(free_port()),
        "LAB_ACME_DNS_MANAGEMENT_PORT": str(free_port()),
    }


def host_traces() -> dict[str, set[str]]:
    """What containers and their networks leave on this machine: network links (bridges,
    veths) and mount points."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    return {
        "links": {line.split(": ")[1].split("@")[0] for line in links.stdout.splitlines()},
        # /run/netns itself is podman's, mounted once per boot by the first container with a
        # network namespace of its own and shared by all; the lab's namespaces are below it.
        "mounts": {line.split()[4] for line in mountinfo} - {"/run/netns"},
    }


@pytest.fixture(scope="module")
def traces_before_the_lab(lab_env: dict[str, str]) -> dict[str, set[str]]:
    return host_traces()


@pytest.fixture(scope="module")
def first_run(
    lab_env: dict[str, str], traces_before_the_lab: dict[str, set[str]]
) -> Iterator[subprocess.CompletedProcess[str]]:
    result = lab("up", env=lab_env)
    try:
        yield result
    finally:
        if STATE.exists():
            lab("down", env=lab_env)


def test_first_run_succeeds_and_smoke_test_passes(
    first_run: subprocess.CompletedProcess[str],
) -> None:
    changed = changed_by_host(first_run)
    assert set(changed) == {"localhost", SERVER, AGENT}
    assert all(count > 0 for count in changed.values()), changed
    output = output_of(first_run)
    assert "Smoke test passed" in output
    # The lab says what runs: the Go-built parts, the service on its pods, what does not yet.
    assert (
        "The service's pods serve it on the NodePort and, through Traefik, on the Ingress" in output
    )
    assert "Not in this lab: Grafana" in output
    assert "https://webapp.lab.localhost/" in output
    assert "App (Ingress):  https://webapp.lab.localhost/" in output
    assert f"--ignore-certificate-errors-spki-list={spki_pin(ACME_INTERMEDIATE)}" in output
    assert f"--cacert {ACME_ROOT} https://webapp.lab.localhost/" in output
    prometheus_url = f"http://10.89.47.10:{labmonitoring.PROMETHEUS_NODEPORT}/"
    assert prometheus_url in output
    # The summary names what the user opens: the server's address stands in for the EIP.
    assert "App (NodePort): http://10.89.47.10:30080/" in output
    assert "Grafana:        http://10.89.47.10:30300/" in output
    assert f"Kubeconfig:     {STATE / 'kubeconfig'}" in output


def test_the_lab_ran_the_installed_collection(first_run, lab_env: dict[str, str]) -> None:
    found = subprocess.run(
        ["ansible-galaxy", "collection", "list", "devsecops.k3s_ec2"],
        cwd=ROOT, env={**lab_env, "ANSIBLE_COLLECTIONS_PATH": lab_env["LAB_COLLECTIONS_PATH"]},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    paths = [line[2:] for line in found.stdout.splitlines() if line.startswith("# /")]
    assert paths == [f"{lab_env['LAB_COLLECTIONS_PATH']}/ansible_collections"], found.stdout
    assert f"with the collections in {lab_env['LAB_COLLECTIONS_PATH']}" in output_of(first_run)


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
    instances = {
        {t["Key"]: t["Value"] for t in i["Tags"]}["Name"]: i
        for r in reservations
        for i in r["Instances"]
    }
    assert set(instances) == {SERVER, AGENT}
    assert {i["MetadataOptions"]["HttpTokens"] for i in instances.values()} == {"required"}
    addresses = ec2.describe_addresses(Filters=tags)["Addresses"]
    assert [a.get("InstanceId") for a in addresses] == [instances[SERVER]["InstanceId"]]
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


@pytest.mark.parametrize("name", [SERVER, AGENT])
def test_node_container_is_hardened(first_run, name: str) -> None:
    sshd = node(name, "sshd", "-T")
    assert sshd.returncode == 0, sshd.stderr
    settings = dict(line.split(" ", 1) for line in sshd.stdout.splitlines() if " " in line)
    assert settings["permitrootlogin"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["x11forwarding"] == "no"
    assert "cbc" not in settings["ciphers"]
    # In a container the kernel settings are written, never applied to the host's kernel.
    sysctl = node(name, "sh", "-c", "cat /etc/sysctl.d/*.conf")
    assert re.search(r"^vm\.overcommit_memory ?= ?1$", sysctl.stdout, re.M), sysctl.stdout


@pytest.mark.parametrize("name", [SERVER, AGENT])
def test_aide_baseline_holds_k3s_and_reports_unplanned_files(first_run, name: str) -> None:
    """The k3s stage installs after the hardening stage's baseline; it must be in it."""
    limit = "^/(usr/local/bin|etc/rancher|etc/systemd/system)"
    check = ["aide", "--config=/etc/aide/aide.conf", "--check", "--limit", limit]
    clean = node(name, *check)
    # 0: no difference. k3s's binary, units and configuration were recorded after k3s ran.
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr
    probe = "/usr/local/bin/lab-unplanned-probe"
    node(name, "touch", probe)
    try:
        dirty = node(name, *check)
    finally:
        node(name, "rm", "-f", probe)
    assert dirty.returncode & 1 and dirty.returncode < 14, dirty.stderr
    assert probe in dirty.stdout


def test_kernel_settings_are_written_but_not_applied_in_a_container(first_run) -> None:
    output = output_of(first_run)
    assert "which shares the kernel of its host" in output
    assert node(SERVER, "test", "-s", "/etc/sysctl.d/90-k3s-kubelet.conf").returncode == 0


def test_nodes_have_the_k3s_configuration(first_run) -> None:
    for name in (SERVER, AGENT):
        modes = node(name, "stat", "-c", "%a %U", "/etc/rancher/k3s/config.yaml")
        assert modes.stdout.split() == ["600", "root"], name
        service = "k3s" if name == SERVER else "k3s-agent"
        unit = node(name, "cat", f"/etc/systemd/system/{service}.service")
        assert "--config" in unit.stdout, (name, unit.stderr)
        assert "--token " not in unit.stdout and "K3S_TOKEN" not in unit.stdout
    server = node(SERVER, "cat", "/etc/rancher/k3s/config.yaml").stdout
    assert "secrets-encryption: true" in server
    assert "protect-kernel-defaults: true" in server
    assert "token-file:" in server
    agent = node(AGENT, "cat", "/etc/rancher/k3s/config.yaml").stdout
    # The agent joins the server at the address that stands in for its Elastic IP.
    assert "server: https://10.89.47.10:6443" in agent
    assert "secrets-encryption" not in agent  # server-only settings stay off the agent
    # The agent holds the agent token only, the server's own, and never the server token.
    agent_token = [node(n, "cat", "/etc/rancher/k3s/agent-token").stdout for n in (SERVER, AGENT)]
    assert agent_token[0] and agent_token[0] == agent_token[1]
    assert "agent-token-file: /etc/rancher/k3s/agent-token" in server
    assert re.search(r"^token-file: /etc/rancher/k3s/agent-token$", agent, re.M), agent
    server_token = node(SERVER, "cat", "/etc/rancher/k3s/cluster-token").stdout
    assert server_token and server_token != agent_token[0]
    assert node(AGENT, "test", "-e", "/etc/rancher/k3s/cluster-token").returncode == 1


def test_the_server_configures_traefik_to_keep_client_addresses(first_run) -> None:
    """The lab serves an Ingress, so k3s would deploy Traefik: the first server holds the chart
    configuration that keeps each client's address (what the rate limit and Grafana's admin
    ranges key on) and runs Traefik on that server, the node the Elastic IP reaches."""
    path = "/var/lib/rancher/k3s/server/manifests/traefik-config.yaml"
    assert node(SERVER, "stat", "-c", "%a %U", path).stdout.split() == ["600", "root"]
    config = yaml.safe_load(node(SERVER, "cat", path).stdout)
    assert (config["kind"], config["metadata"]["name"]) == ("HelmChartConfig", "traefik")
    values = yaml.safe_load(config["spec"]["valuesContent"])
    assert values["service"]["spec"]["externalTrafficPolicy"] == "Local"
    # The contract's resolver, by HTTP-01 on port 80, its state on the chart's volume.
    acme = values["certificatesResolvers"]["lab-acme"]["acme"]
    assert acme["httpChallenge"] == {"entryPoint": "web"}
    assert acme["storage"] == "/data/acme.json" and values["persistence"]["enabled"] is True
    # The name the server's node registered with (the lab's node containers are named so).
    assert values["nodeSelector"] == {"kubernetes.io/hostname": SERVER}
    assert node(AGENT, "test", "-e", path).returncode == 1


@pytest.fixture(scope="module")
def kube(first_run) -> client.ApiClient:
    return config.new_client_from_config(str(STATE / "kubeconfig"))


def test_app_objects_are_admitted(kube: client.ApiClient) -> None:
    namespace = client.CoreV1Api(kube).read_namespace("webapp")
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp")
    # By digest, as the CD workflow deploys it: the one containerd gave the imported image.
    assert re.fullmatch(
        r"ghcr\.io/devsecops/webapp@sha256:[0-9a-f]{64}",
        deployment.spec.template.spec.containers[0].image,
    )
    policies = client.AdmissionregistrationV1Api(kube).list_validating_admission_policy()
    assert policies.items, "no ValidatingAdmissionPolicy in the cluster"


def test_the_service_is_served_by_its_pods_on_the_nodeport(kube: client.ApiClient) -> None:
    """Both nodes are Ready; the migration Job completed against the lab's PostgreSQL;
    every replica is Ready on a lab node; the NodePort answers from this machine."""
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {SERVER, AGENT}
    assert all(
        c.status == "True" for n in nodes.values() for c in n.status.conditions if c.type == "Ready"
    )
    jobs = client.BatchV1Api(kube).list_namespaced_job("webapp").items
    assert jobs and all(job.status.succeeded == 1 for job in jobs), [j.status for j in jobs]
    deployment = apps.read_namespaced_deployment("webapp", "webapp")
    assert deployment.status.ready_replicas == deployment.spec.replicas >= 1
    running = [p for p in serving_pods(kube) if p.status.phase == "Running"]
    assert len(running) >= deployment.spec.replicas
    assert {p.spec.node_name for p in running} <= {SERVER, AGENT}
    assert open_url(nodeport_url(kube, "/healthz"))[0] == 200


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


def test_network_policies_hold_the_service_to_its_peers(kube: client.ApiClient) -> None:
    """The nodes enforce the service's NetworkPolicies: a pod they select as the service
    (its image, its labels but not the server's component) reaches the database and the
    cluster DNS, nothing else; a pod of the namespace that no policy lets out cannot reach
    a server. (From another namespace a pod would reach it: the NodePort's ipBlock,
    0.0.0.0/0 by default, admits pod addresses too.)"""
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp")
    template = kube.sanitize_for_serialization(deployment.spec.template)
    served = template["spec"]["containers"][0]
    prober = {k: served[k] for k in ("image", "securityContext", "resources") if k in served}
    server = next(p for p in serving_pods(kube) if p.status.pod_ip)
    peer = f"{server.status.pod_ip}:{served['ports'][0]['containerPort']}"
    # Where the pods find the database: the Secret they read it from.
    db = client.CoreV1Api(kube).read_namespaced_secret("webapp-db", "webapp").data
    database = ":".join(base64.b64decode(db[key]).decode() for key in ("host", "port"))
    api_server = urllib.parse.urlsplit(kube.configuration.host).netloc
    service = {"app.kubernetes.io/name": "webapp", "app.kubernetes.io/component": "probe"}
    # By name: the policy lets the pod ask the cluster DNS, not connect to what it names.
    api_service = f"kubernetes.default.svc.{CLUSTER_DOMAIN}:443"
    seen = connections_from_pod(
        kube, "webapp", service, prober, [database, api_server, api_service, peer]
    )
    assert seen == {
        database: "opened",
        api_server: "blocked",
        api_service: "blocked",
        peer: "blocked",
    }
    stranger = {"lab.test/probe": "stranger"}
    assert connections_from_pod(kube, "webapp", stranger, prober, [peer]) == {peer: "blocked"}


def test_second_run_changes_nothing(first_run, lab_env: dict[str, str]) -> None:
    again = lab("up", env=lab_env)
    assert changed_by_host(again) == {"localhost": 0, SERVER: 0, AGENT: 0}, changed_tasks(again)
    # Nor do the lab's own playbooks (their logs): lab.yml made the nodes and the lab's values
    # and joined the nodes, which already hold the images, by their digests; lab-ready.yml runs
    # the monitoring stand-ins and keeps the certificate's roots and the write credential.
    for log in ("lab.log", "lab-ready.log"):
        made = (STATE / log).read_text()
        assert set(RECAP.findall(made)) == {("localhost", "0", "0", "0")}, made[-3000:]


def test_check_mode_run_changes_nothing(first_run, lab_env: dict[str, str]) -> None:
    result = lab("up", "--check", "--diff", env=lab_env)
    assert changed_by_host(result) == {"localhost": 0, SERVER: 0, AGENT: 0}
    assert "Smoke test passed" not in output_of(result)  # it would write an item


def test_deploy_stage_alone_reads_the_published_outputs(first_run, lab_env: dict[str, str]) -> None:
    """`--tags deploy`: no provisioning in this run, so the database secret comes from moto."""
    result = lab("up", "--tags", "deploy", env=lab_env)
    changed = changed_by_host(result)
    assert changed == dict.fromkeys(changed, 0)
    output = output_of(result)
    assert "rds : Publish the database found for the next stages" in output
    assert "app_deploy : Ensure the Deployment runs this image" in output
    # Other stages only gather facts and check their arguments (Ansible tags those "always").
    assert "aws_network : Ensure the VPC exists" not in output
    assert "hardening : Write the login banner" not in output


def test_harden_playbook_alone_finds_the_nodes_by_tag(first_run, lab_env: dict[str, str]) -> None:
    """playbooks/harden.yml by itself: the nodes come from the inventory's aws_ec2 source
    (localhost only checks the contract)."""
    result = lab("run", "playbooks/harden.yml", env=lab_env)
    assert changed_by_host(result) == {"localhost": 0, SERVER: 0, AGENT: 0}


def test_limit_touches_only_the_named_node(first_run, lab_env: dict[str, str]) -> None:
    for name in (SERVER, AGENT):
        assert node(name, "sh", "-c", f"echo tampered > {BANNER}").returncode == 0
    result = lab("up", "--limit", AGENT, env=lab_env)
    changed = changed_by_host(result)
    assert set(changed) == {AGENT}
    assert changed[AGENT] >= 1
    assert node(AGENT, "cat", BANNER).stdout.strip() != "tampered"
    assert node(SERVER, "cat", BANNER).stdout.strip() == "tampered"


WRITERS = "k3s-ec2/local/webapp/writers"


def lab_secret(lab_env: dict[str, str], name: str) -> dict[str, str]:
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=f"http://127.0.0.1:{lab_env['LAB_MOTO_PORT']}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # pragma: allowlist secret
        region_name="us-east-1",
    )
    return json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])


def connect(
    lab_env: dict[str, str], login: dict[str, str], dbname: str
) -> psycopg2.extensions.connection:
    """A session on the lab's PostgreSQL as `login`, which stands in for RDS."""
    return psycopg2.connect(
        host="127.0.0.1",
        port=int(lab_env["LAB_PG_PORT"]),
        user=login["username"],
        password=login["password"],
        dbname=dbname,
        connect_timeout=10,
    )


def test_the_service_runs_with_its_own_login(
    first_run, kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    """The database Secret the pods get holds the service's login, made from the server node
    by the database stage: it owns its database and the tables its migrations made (the
    migration Job ran them with that Secret), and may do nothing else."""
    data = client.CoreV1Api(kube).read_namespaced_secret("webapp-db", "webapp").data
    given = {k: base64.b64decode(data[k]).decode() for k in ("username", "password", "dbname")}
    master = lab_secret(lab_env, "k3s-ec2/local/rds/master")  # pragma: allowlist secret
    app = lab_secret(lab_env, "k3s-ec2/local/rds/webapp")  # pragma: allowlist secret
    assert given == {"username": "webapp", "password": app["password"], "dbname": "webapp"}
    assert app["password"] != master["password"]
    # As on RDS, the login that made it is no superuser: the stage needs no more than that.
    with connect(lab_env, master, "postgres") as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, True)
    conn.close()
    with connect(lab_env, app, "webapp") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        assert cur.fetchone() == (False, False, False)
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'webapp'")
        assert cur.fetchone() == ("webapp",)
        cur.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchall() == [("webapp",)]
    conn.close()


def test_the_pods_verify_the_databases_certificate(
    first_run, kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    """The lab's PostgreSQL serves TLS from the lab's CA, as RDS does from Amazon's: the pods
    connect with verify-full against the CA the role gave them, and every session is encrypted."""
    pod = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp").spec.template
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["PGSSLMODE"] == "verify-full"
    bundle = client.CoreV1Api(kube).read_namespaced_config_map("webapp-db-ca", "webapp")
    assert bundle.data["ca.pem"].strip() == (STATE / "db-ca.pem").read_text().strip()
    app = lab_secret(lab_env, "k3s-ec2/local/rds/webapp")  # pragma: allowlist secret
    with connect(lab_env, app, "webapp") as conn, conn.cursor() as cur:
        # The pods' pools keep their sessions open (the readiness probe uses them).
        cur.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = current_user AND a.pid <> pg_backend_pid() "
            "AND a.client_addr <> '127.0.0.1'"
        )
        sessions = [ssl for (ssl,) in cur.fetchall()]
    conn.close()
    assert sessions and all(sessions), sessions


def test_the_k3s_datastore_gets_its_own_login(first_run, lab_env: dict[str, str]) -> None:
    """prod's setting (k3s_ec2_datastore: rds) on the lab: while k3s's state is in the
    service's database the stage refuses; then the provision and database stages give k3s
    its own login and database, which the service's login cannot open, nor k3s's the
    service's; a second run changes nothing."""
    stages = ("run", "playbooks/site.yml", "--tags", "provision,database")
    rds = ("-e", "k3s_ec2_datastore=rds")
    app = lab_secret(lab_env, "k3s-ec2/local/rds/webapp")  # pragma: allowlist secret
    # A cluster whose state is in the service's database: the stage stops, k3s gets nothing.
    with connect(lab_env, app, "webapp") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kine (id bigint)")
    conn.close()
    refused = lab(*stages, *rds, env=lab_env)
    assert refused.returncode != 0
    assert "k3s's state (table kine) is in the service's database webapp" in output_of(refused)
    with connect(lab_env, app, "webapp") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'k3s'")
        assert cur.fetchone() == (0,)
        cur.execute("DROP TABLE kine")
    conn.close()
    changed = changed_by_host(lab(*stages, *rds, env=lab_env))
    assert changed[SERVER] > 0, changed  # the login and its database
    assert set(changed_by_host(lab(*stages, *rds, env=lab_env)).values()) == {0}
    k3s = lab_secret(lab_env, "k3s-ec2/local/rds/k3s")  # pragma: allowlist secret
    assert k3s["username"] == "k3s" and k3s["password"] != app["password"]
    with connect(lab_env, k3s, "k3s") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kine_probe (id bigint)")  # kine makes its table like this
        cur.execute("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False)
    conn.close()
    for login, dbname in ((k3s, "webapp"), (app, "k3s")):
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            connect(lab_env, login, dbname)


# --- What only running pods show: disruptions under steady load to the NodePort ---------


def nodeport_url(kube: client.ApiClient, path: str) -> str:
    node = client.CoreV1Api(kube).read_node(SERVER)
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    service = client.CoreV1Api(kube).read_namespaced_service("webapp", "webapp")
    return f"http://{address}:{next(p.node_port for p in service.spec.ports if p.node_port)}{path}"


def open_url(
    url: str,
    body: dict[str, str] | None = None,
    credential: str | None = None,
    host: str | None = None,
) -> tuple[int, bytes]:
    """GET `url`, or POST `body` as JSON, naming `host` (an Ingress host) when given;
    (status, body). Only the lab's own addresses."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    if host is not None:
        headers["Host"] = host
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - a lab node
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - a lab node
        return resp.status, resp.read()


def serving_pods(kube: client.ApiClient) -> list[client.V1Pod]:
    return client.CoreV1Api(kube).list_namespaced_pod("webapp", label_selector=SERVING).items


def settled(kube: client.ApiClient) -> bool:
    """The Deployment's replicas are all updated and Ready, and no pod is still stopping."""
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp")
    status, want = deployment.status, deployment.spec.replicas
    pods = serving_pods(kube)
    return (
        (status.observed_generation or 0) >= deployment.metadata.generation
        and status.updated_replicas == want
        and status.ready_replicas == want
        and len(pods) == want
        and all(p.metadata.deletion_timestamp is None for p in pods)
    )


def test_a_rolling_update_under_load_fails_no_request(kube: client.ApiClient) -> None:
    """maxUnavailable 0, readiness, the preStop pause and gunicorn's graceful stop together:
    not one request to the NodePort fails while every pod is replaced."""
    before = {p.metadata.name for p in serving_pods(kube)}
    with SteadyLoad(nodeport_url(kube, "/healthz")) as load:
        time.sleep(2)
        client.AppsV1Api(kube).patch_namespaced_deployment(
            "webapp",
            "webapp",
            {
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"lab.test/restart": str(time.time())}}
                    }
                }
            },
        )
        wait_for(lambda: settled(kube), "the rolling update to finish", timeout=240)
        time.sleep(3)
    assert not before & {p.metadata.name for p in serving_pods(kube)}, "no pod was replaced"
    assert load.ok > 50 and not load.failures, load.summary()


def test_a_deleted_pod_is_replaced_without_a_failed_request(kube: client.ApiClient) -> None:
    victim = serving_pods(kube)[0].metadata.name
    with SteadyLoad(nodeport_url(kube, "/healthz")) as load:
        time.sleep(2)
        client.CoreV1Api(kube).delete_namespaced_pod(victim, "webapp")
        wait_for(
            lambda: settled(kube) and victim not in {p.metadata.name for p in serving_pods(kube)},
            "a replacement pod",
            timeout=180,
        )
        time.sleep(3)
    assert load.ok > 50 and not load.failures, load.summary()


def test_writes_need_the_credential_the_deployment_made_in_secrets_manager(
    kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    items = nodeport_url(kube, "/api/v1/items")
    with pytest.raises(urllib.error.HTTPError) as refused:
        open_url(items, {"name": "anonymous"})
    assert refused.value.code == 401
    (credential,) = lab_secret(lab_env, WRITERS)["credentials"]
    assert len(credential) >= 32
    # Where README tells the lab's user to find it, for them only.
    kept = STATE / "writer-credential"
    assert kept.read_text() == credential + "\n"
    assert kept.stat().st_mode & 0o077 == 0
    status, body = open_url(items, {"name": "with the credential"}, credential)
    assert status == 201
    assert json.loads(body)["name"] == "with the credential"


# --- Traefik, the ingress controller k3s ships, built from its Go module ----------------------


def ingress_host(kube: client.ApiClient) -> str:
    ingress = client.NetworkingV1Api(kube).read_namespaced_ingress("webapp", "webapp")
    return ingress.spec.rules[0].host


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address` as a client that resolved `host` there: SNI, Host and the
    certificate's name are the host's, verified against the lab ACME CA's root only; a
    reconnect goes to the same address."""

    def __init__(self, address: str, host: str, port: int = 443) -> None:
        self.pinned_context = ssl.create_default_context(cafile=str(ACME_ROOT))
        super().__init__(host, port, context=self.pinned_context, timeout=10)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), timeout=self.timeout)
        self.sock = self.pinned_context.wrap_socket(raw, server_hostname=self.host)


def https_get(address: str, host: str, path: str) -> tuple[int, bytes]:
    connection = PinnedHTTPSConnection(address, host)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_get(address: str, host: str, path: str) -> http.client.HTTPResponse:
    """A plain-HTTP GET to `address` naming `host`; the response, not followed."""
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def node_addresses(kube: client.ApiClient) -> dict[str, str]:
    return {
        n.metadata.name: next(a.address for a in n.status.addresses if a.type == "InternalIP")
        for n in client.CoreV1Api(kube).list_node().items
    }


def test_traefik_serves_the_ingress_host_over_tls_on_the_server_node(
    kube: client.ApiClient,
) -> None:
    """The server node's port 443 (where k3s's Traefik runs, the node the Elastic IP reaches)
    serves the Ingress host from the service's pods with the certificate Traefik got from the
    lab's ACME CA (Traefik's own default would fail verification), and port 80 only redirects
    the host to HTTPS. The service's NetworkPolicy admits Traefik's pods and no other pod;
    another host finds no route, and the admin paths are not routed. The agent publishes
    neither port."""
    host = ingress_host(kube)
    addresses = node_addresses(kube)
    assert set(addresses) == {SERVER, AGENT}
    for port in (80, 443):
        with pytest.raises(OSError):
            socket.create_connection((addresses[AGENT], port), timeout=3).close()
    address = addresses[SERVER]
    status, body = https_get(address, host, "/")
    assert status == 200
    assert b"<title>webapp: items</title>" in body
    assert json.loads(https_get(address, host, "/healthz")[1]) == {"status": "ok"}
    for path in ("/metrics", "/readyz"):
        assert https_get(address, host, path)[0] == 404, path
    redirected = http_get(address, host, "/api/v1/items?limit=1")
    assert redirected.status in (301, 308)
    assert redirected.getheader("Location") == f"https://{host}/api/v1/items?limit=1"
    assert http_get(address, f"other.{host}", "/").status == 404


def test_traefik_got_the_hosts_certificate_from_the_acme_ca(
    kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    """The certificate the server node's Traefik serves for the host was issued by the lab's
    ACME CA (its root, read here from the CA's own API, exists only since the CA started)
    through the resolver the Ingress names: no Secret holds it."""
    host = ingress_host(kube)
    management = http.client.HTTPSConnection(
        "127.0.0.1", int(lab_env["LAB_ACME_MANAGEMENT_PORT"]), timeout=10,
        context=ssl.create_default_context(cafile=str(ACME / "ca.pem")),
    )  # fmt: skip
    try:
        management.request("GET", "/roots/0")
        root = management.getresponse().read().decode()
    finally:
        management.close()
    context = ssl.create_default_context(cadata=root)
    address = node_addresses(kube)[SERVER]
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert names == [host]
    ingress = client.NetworkingV1Api(kube).read_namespaced_ingress("webapp", "webapp")
    assert ingress.metadata.annotations[
        "traefik.ingress.kubernetes.io/router.tls.certresolver"
    ] == ("lab-acme")
    assert [t.secret_name for t in ingress.spec.tls] == [None]
    # Another CA's root does not vouch for it.
    other = ssl.create_default_context(cafile=str(ACME / "ca.pem"))
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        other.wrap_socket(raw, server_hostname=host)


def test_a_browser_signs_in_and_adds_an_item_through_the_ingress(
    kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    """Real Chromium opens the Ingress host (resolved to the server node, as DNS would resolve
    it to the Elastic IP), signs in with the writers' credential and adds an item."""
    host = ingress_host(kube)
    address = node_addresses(kube)[SERVER]
    (credential,) = lab_secret(lab_env, WRITERS)["credentials"]
    base = f"https://{host}"
    name = f"through the ingress {uuid.uuid4().hex[:8]}"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *FLAGS,
                f"--host-resolver-rules=MAP {host} {address}",
                # Trust the lab's certificate only (by its key), as a browser trusts a public CA's.
                f"--ignore-certificate-errors-spki-list={spki_pin(ACME_INTERMEDIATE)}",
            ],
            headless=True,
        )
        try:
            page = chromium.new_page()
            elsewhere: list[str] = []
            page.on(
                "request", lambda r: None if r.url.startswith(base) else elsewhere.append(r.url)
            )
            # Typed as plain HTTP, the address lands on HTTPS.
            page.goto(f"http://{host}/")
            assert page.url == base + "/"
            elsewhere.remove(f"http://{host}/")
            assert page.title() == "webapp: items"
            page.fill("#credential", credential)
            page.click("form.signin button[type=submit]")
            page.wait_for_url(base + "/")
            page.fill("#name", name)
            page.click("form.add button[type=submit]")
            page.wait_for_url(base + "/")
            assert name in page.locator("#items td.name").all_inner_texts()
            assert elsewhere == []
        finally:
            chromium.close()
    listed = json.loads(open_url(nodeport_url(kube, "/api/v1/items?limit=100"))[1])["items"]
    assert name in {item["name"] for item in listed}


def statuses(address: str, port: int, count: int, tls_host: str | None = None) -> list[int]:
    """The statuses of `count` requests for /healthz, sent over 16 connections at once (over
    TLS to `tls_host` when given): far faster than any limit here, however busy the machine."""

    def send(n: int) -> list[int]:
        connection = (
            PinnedHTTPSConnection(address, tls_host, port)
            if tls_host
            else http.client.HTTPConnection(address, port, timeout=10)
        )
        found = []
        try:
            for _ in range(n):
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                found.append(response.status)
        finally:
            connection.close()
        return found

    with ThreadPoolExecutor(max_workers=16) as pool:
        shares = [count // 16 + (1 if i < count % 16 else 0) for i in range(16)]
        return [status for part in pool.map(send, shares) for status in part]


def test_the_ingress_holds_each_client_to_its_rate_limit(kube: client.ApiClient) -> None:
    """Traefik answers 429 once a client has spent its burst, through the Ingress only: the
    same requests to the NodePort are all served."""
    middleware = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        "traefik.io", "v1alpha1", "webapp", "middlewares", "webapp-rate-limit"
    )
    limit = middleware["spec"]["rateLimit"]
    count = 3 * limit["burst"]
    address = node_addresses(kube)[SERVER]
    try:
        through_ingress = statuses(address, 443, count, ingress_host(kube))
        assert set(through_ingress) == {200, 429}
        assert through_ingress.count(200) >= limit["burst"]
        nodeport = urllib.parse.urlsplit(nodeport_url(kube, "/")).port
        assert nodeport is not None
        assert set(statuses(address, nodeport, count)) == {200}
    finally:
        # The bucket fills again before a later test comes through the Ingress.
        time.sleep(limit["burst"] / limit["average"] + 1)


def test_the_pods_recover_from_a_database_restart_and_lose_no_row(
    kube: client.ApiClient, lab_env: dict[str, str]
) -> None:
    items = nodeport_url(kube, "/api/v1/items")
    credential = lab_secret(lab_env, WRITERS)["credentials"][-1]
    created = json.loads(open_url(items, {"name": "kept across a database restart"}, credential)[1])
    restart = subprocess.run(
        ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
         "-D", f"{PG_STATE}/data", "-l", f"{PG_STATE}/postgres.log", "-m", "fast", "-w", "restart"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert restart.returncode == 0, restart.stdout + restart.stderr

    def served_everywhere() -> bool:
        # Several requests: each may land on another pod behind the NodePort.
        try:
            return all(open_url(f"{items}?limit=1")[0] == 200 for _ in range(6))
        except OSError:
            return False

    wait_for(served_everywhere, "the items API to answer 200 again", timeout=60)
    assert json.loads(open_url(f"{items}/{created['id']}")[1])["name"] == created["name"]


def test_draining_the_agent_honours_the_disruption_budget_without_a_failed_request(
    kube: client.ApiClient,
) -> None:
    kubectl = ["kubectl", f"--kubeconfig={STATE / 'kubeconfig'}"]
    if AGENT not in {p.spec.node_name for p in serving_pods(kube)}:
        # The spread is a preference: after the earlier disruptions both replicas may be on
        # the server. Move one to the agent first, so the drain has a pod to move back.
        subprocess.run([*kubectl, "cordon", SERVER], capture_output=True, timeout=60, check=True)
        try:
            client.CoreV1Api(kube).delete_namespaced_pod(
                serving_pods(kube)[0].metadata.name, "webapp"
            )
            wait_for(lambda: settled(kube), "a replica on the agent", timeout=180)
        finally:
            subprocess.run(
                [*kubectl, "uncordon", SERVER], capture_output=True, timeout=60, check=True
            )
    assert AGENT in {p.spec.node_name for p in serving_pods(kube)}
    try:
        with SteadyLoad(nodeport_url(kube, "/healthz")) as load:
            time.sleep(2)
            drain = subprocess.run(
                ["kubectl", f"--kubeconfig={STATE / 'kubeconfig'}", "drain", AGENT,
                 "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s"],
                capture_output=True, text=True, timeout=240, check=False,
            )  # fmt: skip
            assert drain.returncode == 0, drain.stdout + drain.stderr
            wait_for(lambda: settled(kube), "the replicas to be Ready on the server", timeout=180)
            time.sleep(3)
        assert {p.spec.node_name for p in serving_pods(kube)} == {SERVER}
        assert load.ok > 50 and not load.failures, load.summary()
    finally:
        subprocess.run(
            ["kubectl", f"--kubeconfig={STATE / 'kubeconfig'}", "uncordon", AGENT],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip


def lab_monitoring(kube: client.ApiClient, nodeport: int, path: str, **query: str) -> Any:
    """A JSON answer of the lab's Prometheus or Alertmanager, on the server node's NodePort."""
    node = client.CoreV1Api(kube).read_node(SERVER)
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    url = f"http://{address}:{nodeport}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a lab node
        return json.load(resp)


def prometheus(kube: client.ApiClient, path: str, **query: str) -> Any:
    return lab_monitoring(kube, labmonitoring.PROMETHEUS_NODEPORT, path, **query)["data"]


def test_prometheus_finds_the_service_pods_on_their_admin_port(kube: client.ApiClient) -> None:
    """Kubernetes discovery from the role's PodMonitor finds every serving pod, and the scrape
    passes the service's NetworkPolicy, which admits the chart's Prometheus to the admin port."""
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("webapp", "webapp")
    ports = deployment.spec.template.spec.containers[0].ports
    admin = next(p.container_port for p in ports if p.name == "admin")
    wait_for(lambda: settled(kube), "the replicas to be Ready")
    expected = {f"{p.status.pod_ip}:{admin}" for p in serving_pods(kube)}

    def scraped() -> dict[str, str]:
        active = prometheus(kube, "/api/v1/targets", state="active")["activeTargets"]
        ours = {
            t["labels"]["instance"]: t["health"] for t in active if t["labels"]["job"] == "webapp"
        }
        return ours if ours and set(ours) == expected and set(ours.values()) == {"up"} else {}

    wait_for(scraped, f"Prometheus to scrape {sorted(expected)}", timeout=120)


def test_prometheus_has_the_request_rate_and_the_roles_rules(kube: client.ApiClient) -> None:
    rate = 'sum by (pod) (rate(http_requests_total{job="webapp", route="/api/v1/items"}[2m]))'

    def served() -> list[dict[str, Any]]:
        # Traffic on every poll: a rate needs the counter to grow between two scrapes.
        for _ in range(10):
            open_url(nodeport_url(kube, "/api/v1/items?limit=1"))
        result = prometheus(kube, "/api/v1/query", query=rate)["result"]
        return [r for r in result if float(r["value"][1]) > 0]

    rates = wait_for(served, "a request rate of the items API in Prometheus", timeout=180)
    assert {r["metric"]["pod"] for r in rates} <= {p.metadata.name for p in serving_pods(kube)}
    rules = {r["name"]: r for g in prometheus(kube, "/api/v1/rules")["groups"] for r in g["rules"]}
    assert set(rules) == {a.name for a in alerts()}
    assert {r["health"] for r in rules.values()} == {"ok"}


def test_scaled_to_zero_the_service_down_alert_reaches_alertmanager(
    kube: client.ApiClient,
) -> None:
    apps = client.AppsV1Api(kube)
    replicas = apps.read_namespaced_deployment_scale("webapp", "webapp").spec.replicas

    def service_down() -> list[dict[str, Any]]:
        active = lab_monitoring(kube, labmonitoring.ALERTMANAGER_NODEPORT, "/api/v2/alerts")
        return [
            a
            for a in active
            if a["labels"]["alertname"] == "ServiceDown" and a["status"]["state"] == "active"
        ]

    assert service_down() == []
    try:
        apps.patch_namespaced_deployment_scale("webapp", "webapp", {"spec": {"replicas": 0}})
        # The pods stop, their targets go stale, the rule waits its 2 minutes (`for`).
        (alert,) = wait_for(service_down, "ServiceDown in Alertmanager", timeout=300)
    finally:
        apps.patch_namespaced_deployment_scale("webapp", "webapp", {"spec": {"replicas": replicas}})
        wait_for(lambda: settled(kube), "the replicas to be back", timeout=180)
    assert alert["labels"]["job"] == "webapp" and alert["labels"]["severity"] == "critical"
    # The lab's Alertmanager sends nowhere: the role's default receiver is "null".
    assert [r["name"] for r in alert["receivers"]] == ["null"]


def test_down_leaves_nothing(
    first_run, lab_env: dict[str, str], traces_before_the_lab: dict[str, set[str]]
) -> None:
    containers = subprocess.run(
        ["podman", "ps", "-a", "-q", "--no-trunc", "--filter", "label=k3s-ec2-lab=1"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert containers
    result = lab("down", env=lab_env)
    assert result.returncode == 0, result.stderr
    assert not STATE.exists()
    assert not Path(PG_STATE).exists()
    left = subprocess.run(
        ["podman", "ps", "-a", "--filter", "label=k3s-ec2-lab=1", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []
    network = subprocess.run(["podman", "network", "exists", NETWORK], check=False)
    assert network.returncode != 0, f"podman network {NETWORK} is still there"
    for port in ("LAB_MOTO_PORT", "LAB_PG_PORT", "LAB_API_PORT", "LAB_ACME_MANAGEMENT_PORT",
                 "LAB_ACME_DNS_MANAGEMENT_PORT"):  # fmt: skip
        assert not port_open(int(lab_env[port])), f"{port} still answers"
    assert read_sysctls() == HOST_SYSCTLS_BEFORE_THE_LAB
    # No bridge, veth or mount of the nodes is left, nor a cgroup of their containers...
    after = host_traces()
    for kind in ("links", "mounts"):
        assert after[kind] <= traces_before_the_lab[kind], (
            kind,
            after[kind] - traces_before_the_lab[kind],
        )
    cgroups = subprocess.run(
        ["find", "/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "(",
         *[arg for cid in containers for arg in ("-name", f"*{cid}*", "-o")][:-1], ")"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert cgroups == []
    # ...nor a rule of this machine's netfilter naming an address of the lab's network
    # (podman's; the nodes' own rules went with their network namespaces).
    subnet = ipaddress.ip_network(lab_subnet())
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    named = {ipaddress.ip_address(a) for a in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", ruleset.stdout)}
    assert not {a for a in named if a in subnet}, ruleset.stdout
