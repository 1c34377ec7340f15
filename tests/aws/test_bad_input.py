"""Wrong input stops provision.yml with a clear message before any AWS resource exists."""

from __future__ import annotations

import json

import pytest

from tests.aws.conftest import ROOT, Aws, Runner

CASES = {
    "invalid admin CIDR": (
        {"ec2_node_admin_cidrs": ["10.0.0.300/32"]},
        "'10.0.0.300/32' is not a valid IPv4 network in CIDR form",
    ),
    "admin CIDR with host bits": (
        {"ec2_node_admin_cidrs": ["203.0.113.7/24"]},
        "'203.0.113.7/24' is not a valid IPv4 network in CIDR form",
    ),
    "invalid VPC CIDR": (
        {"aws_network_vpc_cidr": "10.42.0.0/33"},
        "'10.42.0.0/33' is not a valid IPv4 network in CIDR form",
    ),
    "world-open admin ports": (
        {"ec2_node_admin_cidrs": ["0.0.0.0/0"]},
        "0.0.0.0/0 in ec2_node_admin_cidrs opens SSH and the Kubernetes API to the whole internet",
    ),
    "VPC inside the pod range": (
        {
            "k3s_ec2_vpc_cidr": "10.42.0.0/16",
            "k3s_ec2_public_subnet_cidrs": ["10.42.47.0/24", "10.42.48.0/24"],
            "k3s_ec2_private_subnet_cidrs": ["10.42.10.0/24", "10.42.11.0/24"],
        },
        "k3s_ec2_vpc_cidr 10.42.0.0/16 overlaps k3s_ec2_cluster_cidr 10.42.0.0/16",
    ),
    "database outside the egress policy": (
        {"k3s_ec2_db_cidrs": ["10.0.0.0/16"]},
        "outside k3s_ec2_db_cidrs, the ranges the service may reach: 10.89.10.0/24, 10.89.11.0/24",
    ),
    "monitoring in a system namespace": (
        {"k3s_ec2_monitoring_namespace": "kube-system"},
        '"kube-system" (k3s_ec2_app_namespace="webapp", '
        'k3s_ec2_monitoring_namespace="kube-system")',
    ),
    "monitoring namespace not a DNS label": (
        {"k3s_ec2_monitoring_namespace": "Monitoring"},
        '"Monitoring" (k3s_ec2_app_namespace="webapp", k3s_ec2_monitoring_namespace="Monitoring")',
    ),
    "service and monitoring in one namespace": (
        {"k3s_ec2_app_namespace": "monitoring"},
        'k3s_ec2_app_namespace="monitoring", k3s_ec2_monitoring_namespace="monitoring")',
    ),
    "Ingress host not a host name": (
        {"k3s_ec2_ingress_host": "webapp"},
        "k3s_ec2_ingress_host must be a fully qualified host name such as webapp.example.com "
        '(got "webapp")',
    ),
    "ACME resolver not a DNS label": (
        {"k3s_ec2_acme_resolver": "Lets_Encrypt"},
        "k3s_ec2_acme_resolver empty or a lower-case name of letters, digits and dashes "
        'such as letsencrypt (got "Lets_Encrypt")',
    ),
    "no public key": (
        {"ec2_node_public_key_file": ""},
        "missing SSH public key",
    ),
    "public key file absent": (
        {"ec2_node_public_key_file": "/nonexistent/id.pub"},
        "missing SSH public key",
    ),
    "private key instead of public": (
        {"ec2_node_public_key": "-----BEGIN OPENSSH PRIVATE KEY-----"},
        "does not hold an OpenSSH public key",
    ),
    "region format": (
        {"aws_region": "US-East-1"},
        "'US-East-1' is not an AWS region name",
    ),
    "instance type format": (
        {"ec2_node_instance_type": "t3medium"},
        "instance type 't3medium' is not of the form family.size",
    ),
    "database class format": (
        {"rds_instance_class": "t4g.micro"},
        "rds_instance_class 't4g.micro' is not of the form db.family.size",
    ),
    "wrong variable type": (
        {"ec2_node_agent_count": "two"},
        "ec2_node_agent_count",
    ),
}


@pytest.mark.parametrize(("extra", "message"), CASES.values(), ids=CASES.keys())
def test_bad_input_fails_early_and_creates_nothing(
    runner: Runner, aws: Aws, extra: dict[str, object], message: str
) -> None:
    runner.moto.reset()
    result = runner.run(ROOT / "playbooks" / "provision.yml", "-e", json.dumps(extra))
    assert result.returncode != 0
    assert message in result.output, result.output[-4000:]
    assert "Provision the network, the nodes and the database" not in result.output
    assert not any(aws.project_resources().values())


def test_world_open_admin_ports_pass_the_check_when_explicitly_allowed(
    runner: Runner, aws: Aws
) -> None:
    runner.moto.reset()
    # A later check (the database class) still stops the run, so nothing is created.
    extra = {
        "ec2_node_admin_cidrs": ["0.0.0.0/0"],
        "ec2_node_allow_world_admin": True,
        "rds_instance_class": "bad",
    }
    result = runner.run(ROOT / "playbooks" / "provision.yml", "-e", json.dumps(extra))
    assert result.returncode != 0
    assert "ec2_node_allow_world_admin" not in result.output.split("Check the database")[0]
    assert "rds_instance_class 'bad' is not of the form db.family.size" in result.output
    assert not any(aws.project_resources().values())
