"""provision.yml then teardown.yml on the local inventory, checked with boto3 against moto.

The module provisions once (with -vvv, so the secret check sees the most verbose output);
the tests read that state; the last test tears it down twice.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.aws.conftest import ROOT, Aws, PlaybookRun, Runner

ADMIN_CIDR = "203.0.113.0/24"
CLIENT_CIDR = "198.51.100.0/24"
EXTRA_VARS = json.dumps(
    {
        "ec2_node_admin_cidrs": [ADMIN_CIDR],
        "ec2_node_client_cidrs": [CLIENT_CIDR],
        "ec2_node_agent_count": 1,
    }
)
REPORT_PLAY = """
- name: Provision as a user does
  ansible.builtin.import_playbook: {provision}

- name: Report what the stages published
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the published facts and the in-memory inventory
      ansible.builtin.copy:
        dest: {report}
        content: "{{{{ report | to_nice_json }}}}"
        mode: "0600"
      changed_when: false
      vars:
        report:
          facts: "{{{{ dict(names | zip(names | map('extract', vars))) }}}}"
          groups:
            k3s_server: "{{{{ groups['k3s_server'] | default([]) }}}}"
            k3s_agent: "{{{{ groups['k3s_agent'] | default([]) }}}}"
          ansible_host: >-
            {{{{ dict(nodes | zip(nodes | map('extract', hostvars, 'ansible_host'))) }}}}
        nodes: "{{{{ groups['k3s_server'] | default([]) + groups['k3s_agent'] | default([]) }}}}"
        names: [aws_network_vpc_id, aws_network_public_subnet_ids, aws_network_private_subnet_ids,
                ec2_node_server_eip, ec2_node_security_group_id, rds_endpoint_address,
                rds_endpoint_port, rds_db_name, rds_secret_name, rds_app_secret_name,
                rds_k3s_db_name, rds_k3s_secret_name]
"""


UNSET = "<unset>"
OUTPUTS_PLAY = """
- name: Read the outputs as a stage run alone does
  ansible.builtin.import_playbook: {outputs}

- name: Report what was read
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the facts read back
      ansible.builtin.copy:
        dest: {report}
        content: "{{{{ dict(names | zip(values)) | to_nice_json }}}}"
        mode: "0600"
      changed_when: false
      vars:
        names: [ec2_node_server_eip, ec2_node_security_group_id, rds_endpoint_address,
                rds_endpoint_port, rds_db_name, rds_secret_name, rds_app_secret_name,
                rds_k3s_db_name, rds_k3s_secret_name]
        values: "{{{{ query('ansible.builtin.vars', *names, default='{unset}') }}}}"
"""


def test_check_mode_in_a_new_account_creates_nothing(runner: Runner, aws: Aws) -> None:
    """`--check --diff` before anything exists: each role says what it would make, nothing is."""
    runner.moto.reset()
    before = aws.project_resources()
    assert not any(before.values()), before
    result = runner.run(ROOT / "playbooks" / "provision.yml", "--check", "--diff", "-e", EXTRA_VARS)
    assert result.returncode == 0, result.output[-6000:]
    assert result.changed > 0, "check mode should report what it would create"
    assert aws.project_resources() == before


@dataclass
class Provisioned:
    first: PlaybookRun
    report: dict[str, Any]
    foreign_vpc: str


@pytest.fixture(scope="module")
def provisioned(runner: Runner, aws: Aws, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    runner.moto.reset()
    # Someone else's VPC in the same account: teardown must leave it alone.
    ec2 = aws.client("ec2")
    foreign = ec2.create_vpc(
        CidrBlock="10.99.0.0/16",
        TagSpecifications=[
            {
                "ResourceType": "vpc",
                "Tags": [
                    {"Key": "Project", "Value": "k3s-ec2"},
                    {"Key": "Environment", "Value": "prod"},
                ],
            }
        ],
    )["Vpc"]["VpcId"]
    work = tmp_path_factory.mktemp("provision")
    playbook = work / "provision-report.yml"
    report = work / "report.json"
    playbook.write_text(
        REPORT_PLAY.format(provision=ROOT / "playbooks" / "provision.yml", report=report)
    )
    first = runner.run(playbook, "-vvv", "-e", EXTRA_VARS)
    assert first.returncode == 0, first.output[-6000:]
    print(f"\nfirst provision: {first.seconds:.1f}s, changed={first.changed}")
    return Provisioned(first, json.loads(report.read_text()), foreign)


def node_instances(aws: Aws) -> dict[str, dict[str, Any]]:
    reservations = aws.client("ec2").describe_instances(Filters=aws.tag_filters())["Reservations"]
    return {
        {t["Key"]: t["Value"] for t in i["Tags"]}["Name"]: i
        for r in reservations
        for i in r["Instances"]
        if i["State"]["Name"] == "running"
    }


def group_by_name(aws: Aws, name: str) -> dict[str, Any]:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[*aws.tag_filters(), {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    assert len(groups) == 1, groups
    return groups[0]


def rule_set(permissions: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    rules: set[tuple[Any, ...]] = set()
    for p in permissions:
        port = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        rules.update((*port, r["CidrIp"]) for r in p.get("IpRanges", []))
        rules.update((*port, g["GroupId"]) for g in p.get("UserIdGroupPairs", []))
        rules.update((*port, r["CidrIpv6"]) for r in p.get("Ipv6Ranges", []))
    return rules


def secret_value(aws: Aws, name: str) -> dict[str, Any]:
    raw = aws.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    return json.loads(raw)


def test_stages_publish_the_contract_facts(provisioned: Provisioned, aws: Aws) -> None:
    facts = provisioned.report["facts"]
    vpc = aws.client("ec2").describe_vpcs(VpcIds=[facts["aws_network_vpc_id"]])["Vpcs"][0]
    # inventories/local/group_vars/all/contract.yml
    assert vpc["CidrBlock"] == "10.89.0.0/16"
    assert len(facts["aws_network_public_subnet_ids"]) == 2
    assert len(facts["aws_network_private_subnet_ids"]) == 2
    assert facts["rds_endpoint_port"] == 5432
    assert facts["rds_db_name"] == "webapp"
    assert facts["rds_secret_name"] == "k3s-ec2/local/rds/master"
    assert facts["rds_app_secret_name"] == "k3s-ec2/local/rds/webapp"
    # The lab keeps the cluster state on the server: no datastore login.
    assert facts["rds_k3s_db_name"] == facts["rds_k3s_secret_name"] == ""
    assert provisioned.report["groups"] == {
        "k3s_server": ["k3s-ec2-local-server-1"],
        "k3s_agent": ["k3s-ec2-local-agent-1"],
    }
    instances = node_instances(aws)
    hosts = provisioned.report["ansible_host"]
    assert hosts["k3s-ec2-local-server-1"] == facts["ec2_node_server_eip"]
    assert hosts["k3s-ec2-local-agent-1"] == instances["k3s-ec2-local-agent-1"]["PublicIpAddress"]


def test_subnets_span_two_zones_and_only_public_ones_route_out(
    provisioned: Provisioned, aws: Aws
) -> None:
    facts = provisioned.report["facts"]
    ec2 = aws.client("ec2")
    public = ec2.describe_subnets(SubnetIds=facts["aws_network_public_subnet_ids"])["Subnets"]
    private = ec2.describe_subnets(SubnetIds=facts["aws_network_private_subnet_ids"])["Subnets"]
    assert len({s["AvailabilityZone"] for s in public}) == 2
    assert {s["AvailabilityZone"] for s in public} == {s["AvailabilityZone"] for s in private}
    assert all(s["MapPublicIpOnLaunch"] for s in public)
    assert not any(s["MapPublicIpOnLaunch"] for s in private)
    for subnet_ids, has_igw in ((facts["aws_network_public_subnet_ids"], True),
                                (facts["aws_network_private_subnet_ids"], False)):  # fmt: skip
        tables = ec2.describe_route_tables(
            Filters=[{"Name": "association.subnet-id", "Values": subnet_ids}]
        )["RouteTables"]
        assert len(tables) == 1
        gateways = {r.get("GatewayId", "") for r in tables[0]["Routes"]}
        assert any(g.startswith("igw-") for g in gateways) is has_igw


def test_node_security_group_has_exactly_the_planned_rules(
    provisioned: Provisioned, aws: Aws
) -> None:
    group = group_by_name(aws, "k3s-ec2-local-node")
    assert group["GroupId"] == provisioned.report["facts"]["ec2_node_security_group_id"]
    # The lab serves the service on its NodePort and the Ingress, Grafana on its NodePort:
    # exactly those ports open to the clients, no NodePort range.
    assert rule_set(group["IpPermissions"]) == {
        ("tcp", 22, 22, ADMIN_CIDR),
        ("tcp", 6443, 6443, ADMIN_CIDR),
        ("tcp", 30080, 30080, CLIENT_CIDR),
        ("tcp", 30300, 30300, CLIENT_CIDR),
        ("tcp", 80, 80, CLIENT_CIDR),
        ("tcp", 443, 443, CLIENT_CIDR),
        ("-1", None, None, group["GroupId"]),
    }


def test_nodes_require_imdsv2_and_boot_from_encrypted_gp3(
    provisioned: Provisioned, aws: Aws
) -> None:
    instances = node_instances(aws)
    assert set(instances) == {"k3s-ec2-local-server-1", "k3s-ec2-local-agent-1"}
    volume_ids = []
    for instance in instances.values():
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert instance["KeyName"] == "k3s-ec2-local"
        assert [g["GroupName"] for g in instance["SecurityGroups"]] == ["k3s-ec2-local-node"]
        volume_ids += [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    volumes = aws.client("ec2").describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert len(volumes) == 2
    assert all(v["Encrypted"] and v["VolumeType"] == "gp3" for v in volumes)


def test_key_pair_holds_the_users_public_key(provisioned: Provisioned, aws: Aws) -> None:
    keys = aws.client("ec2").describe_key_pairs(KeyNames=["k3s-ec2-local"], IncludePublicKey=True)
    assert len(keys["KeyPairs"]) == 1


def test_elastic_ip_is_associated_with_the_server(provisioned: Provisioned, aws: Aws) -> None:
    instances = node_instances(aws)
    addresses = aws.client("ec2").describe_addresses(Filters=aws.tag_filters())["Addresses"]
    assert len(addresses) == 1
    assert addresses[0]["InstanceId"] == instances["k3s-ec2-local-server-1"]["InstanceId"]
    assert addresses[0]["PublicIp"] == provisioned.report["facts"]["ec2_node_server_eip"]
    # moto hands out loopback addresses; the tests never send traffic to them.
    assert ipaddress.ip_address(addresses[0]["PublicIp"])


def test_database_is_private_encrypted_and_reachable_only_from_the_nodes(
    provisioned: Provisioned, aws: Aws
) -> None:
    facts = provisioned.report["facts"]
    db = aws.client("rds").describe_db_instances(DBInstanceIdentifier="k3s-ec2-local-db")
    db = db["DBInstances"][0]
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert db["Engine"] == "postgres"
    assert db["BackupRetentionPeriod"] == 7
    assert db["Endpoint"]["Address"] == facts["rds_endpoint_address"]
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == set(
        facts["aws_network_private_subnet_ids"]
    )
    group = group_by_name(aws, "k3s-ec2-local-rds")
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [group["GroupId"]]
    assert rule_set(group["IpPermissions"]) == {
        ("tcp", 5432, 5432, facts["ec2_node_security_group_id"])
    }
    assert group["IpPermissionsEgress"] == []


def test_secret_holds_the_connection_settings(provisioned: Provisioned, aws: Aws) -> None:
    facts = provisioned.report["facts"]
    secret = secret_value(aws, facts["rds_secret_name"])
    assert set(secret) == {"username", "password", "host", "port", "dbname"}
    assert secret["host"] == facts["rds_endpoint_address"]
    assert secret["port"] == 5432
    assert secret["dbname"] == "webapp"
    assert len(secret["password"]) == 32 and secret["password"].isalnum()


def test_the_service_gets_its_own_login_secret(provisioned: Provisioned, aws: Aws) -> None:
    facts = provisioned.report["facts"]
    login = secret_value(aws, facts["rds_app_secret_name"])
    master = secret_value(aws, facts["rds_secret_name"])
    assert set(login) == {"username", "password", "dbname"}
    assert (login["username"], login["dbname"]) == ("webapp", "webapp")
    assert login["username"] != master["username"]
    assert len(login["password"]) == 32 and login["password"] != master["password"]
    assert login["password"] not in provisioned.first.output


def test_secret_never_appears_in_the_output(provisioned: Provisioned, aws: Aws) -> None:
    password = secret_value(aws, "k3s-ec2/local/rds/master")["password"]
    assert "<redacted>" not in password
    assert password not in provisioned.first.output
    assert "ansible-playbook" in provisioned.first.output  # -vvv output really was captured


def test_second_run_changes_nothing(provisioned: Provisioned, runner: Runner, aws: Aws) -> None:
    password = secret_value(aws, "k3s-ec2/local/rds/master")["password"]
    again = runner.run(ROOT / "playbooks" / "provision.yml", "-e", EXTRA_VARS)
    print(f"\nre-run: {again.seconds:.1f}s, changed={again.changed}")
    assert again.returncode == 0, again.output[-6000:]
    assert again.changed == 0, again.output[-6000:]
    assert secret_value(aws, "k3s-ec2/local/rds/master")["password"] == password
    assert password not in again.output


def test_access_playbook_replaces_only_the_admitted_addresses(
    provisioned: Provisioned, runner: Runner, aws: Aws
) -> None:
    """What CD does after a run: the runner's address leaves, every other rule stays."""
    group_id = provisioned.report["facts"]["ec2_node_security_group_id"]
    before = rule_set(group_by_name(aws, "k3s-ec2-local-node")["IpPermissions"])
    runner_cidr = "192.0.2.7/32"
    admitted = json.dumps(
        {"ec2_node_admin_cidrs": [ADMIN_CIDR, runner_cidr], "ec2_node_client_cidrs": [CLIENT_CIDR]}
    )
    run = runner.run(ROOT / "playbooks" / "access.yml", "-e", admitted)
    assert run.returncode == 0, run.output[-6000:]
    during = rule_set(group_by_name(aws, "k3s-ec2-local-node")["IpPermissions"])
    assert during - before == {("tcp", 22, 22, runner_cidr), ("tcp", 6443, 6443, runner_cidr)}

    removed = runner.run(ROOT / "playbooks" / "access.yml", "-e", EXTRA_VARS)
    assert removed.returncode == 0, removed.output[-6000:]
    assert rule_set(group_by_name(aws, "k3s-ec2-local-node")["IpPermissions"]) == before
    again = runner.run(ROOT / "playbooks" / "access.yml", "-e", EXTRA_VARS)
    assert again.returncode == 0 and again.changed == 0, again.output[-6000:]
    assert group_by_name(aws, "k3s-ec2-local-node")["GroupId"] == group_id


def test_dynamic_inventory_finds_the_nodes_by_tag(
    provisioned: Provisioned, runner: Runner, tmp_path: Path
) -> None:
    """The dev inventory's aws_ec2 source, aimed at this environment's tags and region."""
    source = (ROOT / "inventories" / "dev" / "aws_ec2.yml").read_text()
    source = source.replace("tag:Environment: dev", "tag:Environment: local")
    source = source.replace("  - eu-west-1", "  - us-east-1")
    config = tmp_path / "moto.aws_ec2.yml"
    config.write_text(source)
    result = subprocess.run(
        ["ansible-inventory", "-i", str(config), "--list"],
        cwd=ROOT,
        env=runner.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    inventory = json.loads(result.stdout)
    assert inventory["k3s_server"]["hosts"] == ["k3s-ec2-local-server-1"]
    assert inventory["k3s_agent"]["hosts"] == ["k3s-ec2-local-agent-1"]
    address = inventory["_meta"]["hostvars"]["k3s-ec2-local-server-1"]["ansible_host"]
    # ansible-inventory --list marks composed values as unsafe: {"__ansible_unsafe": "..."}.
    if isinstance(address, dict):
        address = address["__ansible_unsafe"]
    assert address == provisioned.report["facts"]["ec2_node_server_eip"]


def read_outputs(runner: Runner, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run playbooks/outputs.yml as a stage run alone does; return what it published."""
    report = tmp_path / "outputs.json"
    playbook = tmp_path / "outputs-report.yml"
    playbook.write_text(
        OUTPUTS_PLAY.format(outputs=ROOT / "playbooks" / "outputs.yml", report=report, unset=UNSET)
    )
    result = runner.run(playbook, *args)
    assert result.returncode == 0, result.output[-6000:]
    assert result.changed == 0
    return json.loads(report.read_text())


def test_a_stage_run_alone_reads_the_published_outputs_from_aws(
    provisioned: Provisioned, runner: Runner, tmp_path: Path
) -> None:
    """playbooks/outputs.yml in a new run finds, by tag, what the provision stage published."""
    read_back = read_outputs(runner, tmp_path)
    published = provisioned.report["facts"]
    assert read_back == {name: published[name] for name in read_back}
    assert UNSET not in read_back.values(), read_back


def test_outputs_of_an_unprovisioned_environment_are_left_unset(
    provisioned: Provisioned, runner: Runner, tmp_path: Path
) -> None:
    """Another environment's stage run alone finds nothing and publishes nothing."""
    read_back = read_outputs(runner, tmp_path, "-e", "k3s_ec2_env=staging")
    assert set(read_back.values()) == {UNSET}


# Last in the module: it removes what the tests above read.
def test_teardown_removes_only_the_project_and_runs_twice(
    provisioned: Provisioned, runner: Runner, aws: Aws
) -> None:
    # What the deploy stage adds beside them: the service's write credentials.
    aws.client("secretsmanager").create_secret(
        Name="k3s-ec2/local/webapp/writers", SecretString='{"credentials": ["x"]}'
    )
    before = aws.project_resources()
    assert all(before.values()), before
    assert "k3s-ec2/local/webapp/writers" in before["secrets"]
    first = runner.run(ROOT / "playbooks" / "teardown.yml")
    print(f"\nteardown: {first.seconds:.1f}s, changed={first.changed}")
    assert first.returncode == 0, first.output[-6000:]
    assert aws.project_resources() == {kind: [] for kind in before}
    second = runner.run(ROOT / "playbooks" / "teardown.yml")
    print(f"second teardown: {second.seconds:.1f}s, changed={second.changed}")
    assert second.returncode == 0, second.output[-6000:]
    assert second.changed == 0, second.output[-6000:]
    vpcs = aws.client("ec2").describe_vpcs()["Vpcs"]
    assert provisioned.foreign_vpc in {v["VpcId"] for v in vpcs}
    assert any(v["IsDefault"] for v in vpcs)
