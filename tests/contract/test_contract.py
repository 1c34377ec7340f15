"""The values two stages share, checked as Ansible resolves them for every inventory.

Each value is set once (inventories/<env>/group_vars/all/contract.yml, docs/contract.md)
and every consumer derives its own from it; these tests compare the consumers with each
other and with what the cluster and the workflows really do with them.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract.values import (
    ACME_RESOLVER_NAMES,
    AWS_INVENTORIES,
    INGRESS_NAMES,
    INVENTORIES,
    NAMES,
    Values,
)
from tests.manifests.render import objects
from tests.support.ansible import ROOT, ansible_env
from tests.support.resolve import WORKFLOW_ENV, resolve
from tests.support.tlsca import TestCA

WORKFLOWS = ROOT / ".github" / "workflows"
ADMIN_PORTS = {22, 6443}


def nets(cidrs: list[str]) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


def overlaps(ranges: dict[str, list[str]]) -> list[str]:
    found = []
    for (name_a, a), (name_b, b) in itertools.combinations(ranges.items(), 2):
        found += [f"{name_a} {x} / {name_b} {y}" for x in nets(a) for y in nets(b) if x.overlaps(y)]
    return found


def outside(inner: list[str], outer: list[str]) -> list[str]:
    return [str(n) for n in nets(inner) if not any(n.subnet_of(o) for o in nets(outer))]


def db_egress(rendered: Path) -> list[str]:
    egress = objects(rendered)[("NetworkPolicy", "webapp-allow-egress")]["spec"]["egress"]
    rule = next(r for r in egress if any(p["port"] == 5432 for p in r["ports"]))
    return [peer["ipBlock"]["cidr"] for peer in rule["to"]]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_no_two_ranges_overlap(values: dict[str, Values], inventory: str) -> None:
    """The VPC, the pods, the Services and the database as k3s, the VPC and the egress
    policy really get them: a node cannot route to a VPC or database address that is
    also a pod or Service address, and the firewall trusts pods and Services on every port."""
    v = values[inventory]
    config = v["k3s_computed_config"]
    pods, services = [config["cluster-cidr"]], [config["service-cidr"]]
    vpc = [v["aws_network_vpc_cidr"]] if inventory in AWS_INVENTORIES else []
    assert overlaps({"VPC": vpc, "pods": pods, "Services": services}) == []
    assert (
        overlaps({"database": v["app_deploy_db_egress_cidrs"], "pods": pods, "Services": services})
        == []
    )


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_the_node_firewall_trusts_exactly_the_ranges_k3s_uses(
    values: dict[str, Values], inventory: str
) -> None:
    v = values[inventory]
    config = v["k3s_computed_config"]
    assert v["hardening_firewall_k3s_cluster_cidr"] == config["cluster-cidr"]
    assert v["hardening_firewall_k3s_service_cidr"] == config["service-cidr"]
    if inventory in AWS_INVENTORIES:
        assert v["hardening_firewall_k3s_node_sources"] == [v["aws_network_vpc_cidr"]]
        assert outside(v["aws_network_public_subnet_cidrs"], [v["aws_network_vpc_cidr"]]) == []


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_the_database_is_inside_the_egress_policy(
    values: dict[str, Values], rendered: dict[str, Path], inventory: str
) -> None:
    """RDS runs in the private subnets; e2e's database is the runner's address."""
    v = values[inventory]
    if inventory in AWS_INVENTORIES:
        database = v["aws_network_private_subnet_cidrs"]
        egress = db_egress(rendered[inventory])
        assert egress == v["app_deploy_db_egress_cidrs"]
    else:
        database = [f"{v['app_deploy_db_host']}/32"]
        egress = v["app_deploy_db_egress_cidrs"]
    assert database, "no database location to check"
    assert outside(database, egress) == [], (
        f"the service's pods may not reach {database}: egress {egress}"
    )


def admitted_scrapes(rendered: Path) -> tuple[dict[str, str], list[str]]:
    """Where the service's ingress policy admits Prometheus from, and to which ports."""
    ingress = objects(rendered)[("NetworkPolicy", "webapp-allow-http")]["spec"]
    (scrape,) = [
        rule
        for rule in ingress["ingress"]
        for peer in rule.get("from", [])
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        == "prometheus"
    ]
    (peer,) = scrape["from"]
    return peer["namespaceSelector"]["matchLabels"], [p["port"] for p in scrape["ports"]]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_prometheus_looks_for_the_service_where_it_is_deployed(
    values: dict[str, Values], rendered: dict[str, Path], inventory: str
) -> None:
    """The service's objects go to the contract's namespace, and the monitoring stage's
    PodMonitor looks there (its namespaceSelector), in a namespace of its own."""
    v = values[inventory]
    namespace = v["k3s_ec2_app_namespace"]
    assert v["app_deploy_namespace"] == v["monitoring_app_namespace"] == namespace
    assert namespace != v["monitoring_namespace"]
    if inventory in rendered:
        deployment = objects(rendered[inventory])[("Deployment", "webapp")]
        assert deployment["metadata"]["namespace"] == namespace


@pytest.mark.parametrize("inventory", AWS_INVENTORIES)
def test_the_service_admits_prometheus_from_where_it_runs(
    values: dict[str, Values], rendered: dict[str, Path], inventory: str
) -> None:
    """The monitoring stage installs Prometheus in one namespace; the service's ingress
    policy must admit the scrapes from that one, to the port the PodMonitor names."""
    v = values[inventory]
    assert v["app_deploy_monitoring_namespace"] == v["monitoring_namespace"]
    namespaces, ports = admitted_scrapes(rendered[inventory])
    assert namespaces == {"kubernetes.io/metadata.name": v["monitoring_namespace"]}
    monitoring_defaults = yaml.safe_load(
        (
            ROOT
            / "collections/ansible_collections/devsecops/k3s_ec2/roles/monitoring/defaults/main.yml"
        ).read_text()
    )
    assert ports == [monitoring_defaults["monitoring_app_port_name"]]


def test_prometheus_moved_elsewhere_is_admitted_from_there(rendered: dict[str, Path]) -> None:
    """Every inventory says `monitoring`, so the comparison above holds even if a stage
    ignored the contract: moved by the one contract value, both stages follow it."""
    moved = {"k3s_ec2_monitoring_namespace": "observability"}
    v = resolve("dev", ["monitoring_namespace", "app_deploy_monitoring_namespace"], moved)
    assert v == {"monitoring_namespace": "observability",
                 "app_deploy_monitoring_namespace": "observability"}  # fmt: skip
    namespaces, _ = admitted_scrapes(rendered["dev-observability"])
    assert namespaces == {"kubernetes.io/metadata.name": "observability"}


def served_ports(v: Values, rendered: Path) -> set[int]:
    """What the node answers from outside: NodePorts (kube-proxy), and 80/443 when
    Traefik and its load balancer run (k3s's disable list)."""
    objs = objects(rendered)
    ports = {
        p["nodePort"]
        for (kind, _), obj in objs.items()
        if kind == "Service" and obj["spec"].get("type") == "NodePort"
        for p in obj["spec"]["ports"]
    }
    if v["monitoring_grafana_exposure"] == "nodeport":
        ports.add(v["monitoring_grafana_nodeport"])
    wants_ingress = (
        any(kind == "Ingress" for kind, _ in objs) or v["monitoring_grafana_exposure"] == "ingress"
    )
    disabled = set(v["k3s_computed_config"].get("disable", []))
    if wants_ingress:
        assert not disabled & {"traefik", "servicelb"}, (
            "an Ingress is deployed but k3s disables Traefik"
        )
        ports |= {80, 443}
    return ports


@pytest.mark.parametrize("inventory", AWS_INVENTORIES)
def test_the_security_group_opens_exactly_the_served_ports(
    values: dict[str, Values], rendered: dict[str, Path], inventory: str
) -> None:
    v = values[inventory]
    rules = [r for r in v["ec2_node_security_group_rules"] if "cidr_ip" in r]
    to_admins = {p for r in rules if r["cidr_ip"] == v["ec2_node_admin_cidrs"] for p in r["ports"]}
    assert to_admins >= ADMIN_PORTS
    opened = {p for r in rules for p in r["ports"]} - ADMIN_PORTS
    assert opened == served_ports(v, rendered[inventory]), "opened to clients vs served by the node"
    clients = [r["cidr_ip"] for r in rules if set(r["ports"]) & opened]
    assert clients == [v["ec2_node_client_cidrs"]] and clients[0], (
        "the served ports are open to nobody"
    )


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_grafana_behind_the_ingress_shares_its_host_and_admits_only_the_admins(
    values: dict[str, Values], inventory: str
) -> None:
    """One host, so the certificate Traefik holds for the service serves Grafana too; and
    Traefik lets through to Grafana exactly the ranges the security group gives the admins."""
    v = values[inventory]
    if v["monitoring_grafana_exposure"] == "ingress":
        assert v["monitoring_grafana_ingress_host"] == v["app_deploy_ingress_host"]
        assert v["monitoring_grafana_allowed_cidrs"] == v["ec2_node_admin_cidrs"]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_the_ingresses_name_the_acme_resolver_k3s_defines(
    values: dict[str, Values], inventory: str
) -> None:
    """Traefik answers an Ingress that names a resolver it does not have with its own default
    certificate: the k3s stage defines the one resolver the Ingresses name."""
    v = values[inventory]
    named = {v["app_deploy_ingress_acme_resolver"], v["monitoring_grafana_ingress_acme_resolver"]}
    assert named == {v["k3s_traefik_acme_resolver"]}
    if inventory in ("local", "prod"):
        assert v["k3s_traefik_acme_resolver"], f"{inventory}'s certificates come from ACME"
    moved = resolve(inventory, ACME_RESOLVER_NAMES, {"k3s_ec2_acme_resolver": "other-ca"})
    assert set(moved.values()) == {"other-ca"}


def test_grafana_follows_the_contracts_host_and_admin_ranges() -> None:
    moved = {"k3s_ec2_ingress_host": "shop.example.org", "k3s_ec2_admin_cidrs": ["198.51.100.0/24"]}
    names = ["app_deploy_ingress_host", "monitoring_grafana_ingress_host",
             "monitoring_grafana_allowed_cidrs", "ec2_node_admin_cidrs"]  # fmt: skip
    assert resolve("prod", names, moved) == {
        "app_deploy_ingress_host": "shop.example.org",
        "monitoring_grafana_ingress_host": "shop.example.org",
        "monitoring_grafana_allowed_cidrs": ["198.51.100.0/24"],
        "ec2_node_admin_cidrs": ["198.51.100.0/24"],
    }


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_cd_reaches_the_smoke_test_the_way_it_reaches_the_api(
    values: dict[str, Values], environment: str
) -> None:
    """CD adds its runner to K3S_EC2_ADMIN_CIDRS only: that must open the served ports to it."""
    v = values[environment]
    runner = WORKFLOW_ENV["K3S_EC2_ADMIN_CIDRS"].split(",")[-1]
    assert runner in v["ec2_node_admin_cidrs"]
    assert outside([runner], v["ec2_node_client_cidrs"]) == [], (
        "the runner cannot reach the smoke test"
    )


def workflow_steps(name: str) -> list[dict[str, Any]]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_cd_removes_the_runner_address_whatever_the_outcome() -> None:
    steps = workflow_steps("cd.yml")
    adds = [
        i
        for i, s in enumerate(steps)
        if "K3S_EC2_ADMIN_CIDRS" in s.get("run", "") and "$ip/32" in s["run"]
    ]
    assert len(adds) == 1
    removals = [
        s
        for s in steps[adds[0] + 1 :]
        if "always()" in s.get("if", "")
        and "playbooks/access.yml" in s.get("run", "")
        and 'K3S_EC2_ADMIN_CIDRS="$ADMIN_CIDRS"' in s["run"]
    ]
    assert len(removals) == 1, "no if: always() step re-applies the admin CIDRs without the runner"
    assert steps[adds[0]].get("id") and steps[adds[0]]["id"] in removals[0]["if"]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_stage_reads_the_kubeconfig_k3s_writes(
    values: dict[str, Values], inventory: str
) -> None:
    v = values[inventory]
    assert v["app_deploy_kubeconfig"] == v["k3s_kubeconfig_local_path"]
    assert v["monitoring_kubeconfig"] == v["k3s_kubeconfig_local_path"]


@pytest.mark.parametrize(
    ("workflow", "inventory"), [("cd.yml", "dev"), ("cd.yml", "prod"), ("e2e.yml", "e2e")]
)
def test_workflows_take_the_kubeconfig_from_the_contract(
    values: dict[str, Values], workflow: str, inventory: str, tmp_path: Path
) -> None:
    """A workflow names no kubeconfig of its own: every step that talks to the cluster
    comes after the contract check that wrote KUBECONFIG, and that file holds exactly the
    path the inventory's k3s stage writes."""
    text = (WORKFLOWS / workflow).read_text()
    assert ".kube/" not in text and not re.search(r"KUBECONFIG:", text)
    steps = workflow_steps(workflow)
    writer = next(i for i, s in enumerate(steps) if "contract_env_file=" in s.get("run", ""))
    env_file = re.search(r'contract_env_file=([^"\s]+)', steps[writer]["run"]).group(1)
    for step in steps[:writer]:
        assert "kubectl" not in step.get("run", ""), step["name"]
    for step in steps[writer + 1 :]:
        run = step.get("run", "")
        if "kubectl" in run and workflow == "cd.yml":
            assert env_file.replace("$RUNNER_TEMP", '"$RUNNER_TEMP') in run or env_file in run, (
                step["name"]
            )

    written = tmp_path / "contract.env"
    result = subprocess.run(
        ["ansible-playbook", "-i", str(ROOT / "inventories" / inventory / "hosts.yml"),
         str(ROOT / "playbooks" / "contract.yml"), "-e", f"contract_env_file={written}"],
        cwd=ROOT, env={**ansible_env(), **WORKFLOW_ENV},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert sorted(written.read_text().splitlines()) == [
        f"APP_NAMESPACE={values[inventory]['app_deploy_namespace']}",
        f"KUBECONFIG={values[inventory]['k3s_kubeconfig_local_path']}",
    ]
    # The steps that talk to the cluster name the service's namespace from that file only.
    for step in steps[writer + 1 :]:
        assert not re.search(r"-n webapp\b|--namespace[= ]webapp\b", step.get("run", "")), step[
            "name"
        ]


def container_env(rendered: Path) -> dict[str, str]:
    deployment = objects(rendered)[("Deployment", "webapp")]
    container = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webapp"
    )
    # What the pod takes from Secrets (valueFrom) gets a stand-in.
    stand_in = {"PGPORT": "5432"}
    return {
        e["name"]: e.get("value", stand_in.get(e["name"], "stand-in"))
        for e in container.get("env", [])
    }


@pytest.mark.parametrize("inventory", AWS_INVENTORIES)
def test_gunicorn_runs_the_worker_count_and_stops_within_the_grace_period(
    values: dict[str, Values], rendered: dict[str, Path], inventory: str, tmp_path: Path
) -> None:
    """gunicorn itself reads its settings with the Deployment's environment (the values
    the pod takes from Secrets and volumes stood in for: the app is loaded, not served).
    The preStop pause and gunicorn's graceful stop must end before the kubelet kills."""
    env = {k: v for k, v in ansible_env().items() if not k.startswith("GUNICORN_")}
    env |= container_env(rendered[inventory])
    (tmp_path / "password").write_text("stand-in")
    (tmp_path / "writers").write_text("stand-in-" * 4 + "\n")
    assert env["PGSSLMODE"] == "verify-full"
    env |= {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PGPASSWORD_FILE": str(tmp_path / "password"),
        "PGSSLROOTCERT": str(TestCA(tmp_path).cert),
        "WEBAPP_WRITERS_FILE": str(tmp_path / "writers"),
    }
    result = subprocess.run(
        ["gunicorn", "-c", "gunicorn.conf.py", "--print-config", "webapp.wsgi:app"],
        cwd=ROOT / "app", env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    workers = re.search(r"^workers\s*=\s*(\d+)$", result.stdout, re.MULTILINE)
    assert workers and int(workers.group(1)) == values[inventory]["app_deploy_gunicorn_workers"]
    graceful = re.search(r"^graceful_timeout\s*=\s*(\d+)$", result.stdout, re.MULTILINE)
    pod = objects(rendered[inventory])[("Deployment", "webapp")]["spec"]["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 1
    assert graceful and pause + int(graceful.group(1)) < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_the_database_and_secret_names_agree(values: dict[str, Values], inventory: str) -> None:
    v = values[inventory]
    assert v["app_deploy_db_name"] == v["rds_db_name"]
    assert v["rds_secret_name"].endswith("/rds/master")


@pytest.mark.parametrize("inventory", AWS_INVENTORIES)
def test_the_service_and_k3s_never_use_the_master_login(
    values: dict[str, Values], inventory: str
) -> None:
    """The secrets the service and k3s read, given what the rds stage publishes: each its
    own login's, never the master's; k3s's exists exactly when k3s keeps its state in RDS.
    Both verify the server with the CA bundle the stage publishes (a file here, so that a
    consumer that fetched Amazon's bundle by itself would differ)."""
    v = values[inventory]
    published = {**v["rds_published"], "rds_ca_file": "/etc/ssl/lab-db-ca.pem"}
    assert v["rds_published"]["rds_ca_url"].startswith("https://")
    consumers = resolve(
        inventory,
        ("app_deploy_db_secret_id", "k3s_datastore", "k3s_rds_secret_name", "k3s_rds_db_name",
         "app_deploy_db_ca_file", "app_deploy_db_ca_url", "k3s_rds_ca_file", "k3s_rds_ca_url"),
        extra_vars={**published, "rds_endpoint_address": "db.example.internal"},
    )  # fmt: skip
    for consumer in ("app_deploy_db", "k3s_rds"):
        assert consumers[f"{consumer}_ca_file"] == published["rds_ca_file"], consumer
        assert consumers[f"{consumer}_ca_url"] == published["rds_ca_url"], consumer
    # Where the rds stage published nothing (a run that skips it), the contract's bundle.
    unpublished = resolve(
        inventory, ("k3s_ec2_db_ca_url", "app_deploy_db_ca_url", "k3s_rds_ca_url", "rds_ca_url")
    )
    assert unpublished["k3s_ec2_db_ca_url"].startswith("https://")
    assert len(set(unpublished.values())) == 1, unpublished
    master = published["rds_secret_name"]
    assert consumers["app_deploy_db_secret_id"] == published["rds_app_secret_name"] != master
    k3s_in_rds = consumers["k3s_datastore"] == "rds"
    assert str(v["rds_k3s_datastore"]).lower() == str(k3s_in_rds).lower()
    if k3s_in_rds:
        assert consumers["k3s_rds_secret_name"] == published["rds_k3s_secret_name"]
        assert consumers["k3s_rds_secret_name"] not in (master, published["rds_app_secret_name"])
        assert consumers["k3s_rds_db_name"] == published["rds_k3s_db_name"]
        assert consumers["k3s_rds_db_name"] != published["rds_db_name"]


# Values the contract derives: an inventory setting one again is a second source.
DERIVED = {
    *(n for n in NAMES if n.startswith(("aws_network_", "hardening_", "ec2_node_", "rds_"))),
    *(n for n in NAMES if n.endswith(("_kubeconfig", "_kubeconfig_local_path", "_egress_cidrs"))),
    "app_deploy_exposure",
    "app_deploy_nodeport",
    "app_deploy_db_name",
    *INGRESS_NAMES,
    "k3s_datastore",
    "k3s_cluster_cidr",
    "k3s_service_cidr",
    "k3s_disable",
}


def test_each_shared_value_is_written_once_per_inventory() -> None:
    for inventory in INVENTORIES:
        files = sorted((ROOT / "inventories" / inventory).glob("*_vars/**/*.yml"))
        seen: dict[str, list[str]] = {}
        for path in files:
            for name in yaml.safe_load(path.read_text()) or {}:
                seen.setdefault(name, []).append(path.name)
        again = {
            n: f
            for n, f in seen.items()
            if n in DERIVED or (n.startswith("k3s_ec2_") and f != ["contract.yml"])
        }
        # host_vars name each node's own address, derived from the contract's subnet.
        again.pop("k3s_ec2_private_ip", None)
        assert again == {}, f"{inventory} sets a shared value outside its contract: {again}"


@pytest.mark.parametrize(
    "credential",
    [
        "a" * 31,
        "a" * 32,
        "!~" * 16,
        "a" * 31 + " ",
        "a" * 31 + "\t",
        "a" * 31 + "é",
        "a" * 32 + "\n",
        "Z9" * 40,
    ],
    ids=["31", "32", "punctuation", "space", "tab", "non-ascii", "newline", "80"],
)
def test_the_role_and_the_service_agree_on_the_write_credentials(credential: str) -> None:
    """The role refuses before any change what the service would refuse at start.

    The role checks with Ansible's `match` test (re.match), the service with fullmatch.
    """
    from webapp.config import WRITER_CREDENTIAL

    role_vars = yaml.safe_load(
        (
            ROOT
            / "collections/ansible_collections/devsecops/k3s_ec2/roles/app_deploy/vars/main.yml"
        ).read_text()
    )
    by_role = re.match(role_vars["app_deploy_writer_credential_pattern"], credential) is not None
    assert by_role == (WRITER_CREDENTIAL.fullmatch(credential) is not None)


def _policy_pattern(variable: str, owner: str) -> str:
    """The regular expression of one of the admission policy's CEL variables."""
    text = (ROOT / "policies" / "workload-security.yaml.j2").read_text()
    expression = text.split(f"- name: {variable}\n", 1)[1].split("- name:", 1)[0]
    (pattern,) = re.findall(r"\.matches\('([^']+)'\)", expression)
    return pattern.replace("{{ app_deploy_ghcr_owner }}", owner)


@pytest.mark.parametrize(
    ("image", "admitted"),
    [
        ("ghcr.io/devsecops/webapp@sha256:" + "a" * 64, True),
        ("ghcr.io/devsecops/webapp:sha-0badc0de@sha256:" + "b" * 64, True),
        ("ghcr.io/devsecops/team/webapp@sha256:" + "c" * 64, True),
        ("ghcr.io/devsecops/webapp:latest", False),
        ("ghcr.io/devsecops/webapp@sha256:" + "A" * 64, False),
        ("ghcr.io/someone-else/webapp@sha256:" + "d" * 64, False),
        ("docker.io/devsecops/webapp@sha256:" + "e" * 64, False),
        ("ghcr.io/devsecops@sha256:" + "f" * 64, False),
    ],
)
def test_the_role_refuses_every_image_the_admission_policy_refuses(
    image: str, admitted: bool
) -> None:
    """The role checks app_deploy_image before any change; the policy checks every pod. An
    image the role lets through and the policy refuses would fail half-way through a deploy."""
    role_vars = yaml.safe_load(
        (
            ROOT
            / "collections/ansible_collections/devsecops/k3s_ec2/roles/app_deploy/vars/main.yml"
        ).read_text()
    )
    role = (
        role_vars["app_deploy_image_regex"]
        .strip()
        .replace("{{ app_deploy_ghcr_owner }}", "devsecops")
    )
    by_role = re.search(role, image) is not None
    by_policy = all(
        re.search(_policy_pattern(name, "devsecops"), image) for name in ("badRegistry", "unpinned")
    )
    assert by_role == admitted
    assert not by_role or by_policy, f"the role lets {image} through, the policy refuses it"
