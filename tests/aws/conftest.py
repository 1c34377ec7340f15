"""A moto server per test module, and a runner for the project's playbooks pointed at it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.moto import MotoServer

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
PROJECT_TAGS = {"Project": "k3s-ec2", "Environment": "local", "ManagedBy": "devsecops.k3s_ec2"}


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float

    @property
    def changed(self) -> int:
        found = re.findall(r"^localhost\s*:.*?changed=(\d+)", self.output, re.MULTILINE)
        assert found, f"no PLAY RECAP in output:\n{self.output[-3000:]}"
        return int(found[-1])


def local_inventory(directory: Path) -> Path:
    """The local inventory's own files (hosts, contract and AWS settings) in `directory`.

    Other stages' files there (the lab's host_vars that reach nodes through podman, their
    group_vars) are left out: these tests talk to moto only and check what ec2_node publishes.
    """
    source = ROOT / "inventories" / "local"
    for name in ("hosts.yml", "group_vars/all/contract.yml", "group_vars/all/aws.yml"):
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
    return directory


class Runner:
    """Runs `ansible-playbook` with the local-style inventory the way a user does, against moto."""

    def __init__(self, moto: MotoServer, public_key: Path, inventory: Path) -> None:
        self.moto = moto
        self.public_key = public_key
        self.inventory = inventory

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        bin_dir = str(Path(sys.executable).parent)
        return {
            **keep,
            **self.moto.env(REGION),
            "PATH": f"{bin_dir}:{keep.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "K3S_EC2_PUBLIC_KEY_FILE": str(self.public_key),
        }

    def run(self, playbook: str | Path, *args: str, timeout: int = 900) -> PlaybookRun:
        started = time.monotonic()
        result = subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory), str(playbook), *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return PlaybookRun(
            result.returncode, result.stdout + result.stderr, time.monotonic() - started
        )


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One real moto_server process per test module; scenarios reset it."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SSH key pair made for the test; only its public half goes to (fake) AWS."""
    directory = tmp_path_factory.mktemp("ssh")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(directory / "id")],
        check=True,
    )
    return directory / "id.pub"


@pytest.fixture(scope="module")
def runner(moto: MotoServer, public_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(moto, public_key, local_inventory(tmp_path_factory.mktemp("inventory")))


class Aws:
    """boto3 clients bound to the moto server."""

    def __init__(self, moto: MotoServer) -> None:
        self.session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.endpoint_url = moto.endpoint_url

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    @staticmethod
    def tag_filters(tags: dict[str, str] = PROJECT_TAGS) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]

    def project_resources(self) -> dict[str, list[str]]:
        """Every resource that carries the project's tags (or name), by kind."""
        ec2 = self.client("ec2")
        rds = self.client("rds")
        secrets = self.client("secretsmanager")
        filters = self.tag_filters()
        instances = [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=filters)["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        db_instances = [
            db["DBInstanceIdentifier"]
            for db in rds.describe_db_instances()["DBInstances"]
            if PROJECT_TAGS.items() <= {t["Key"]: t["Value"] for t in db.get("TagList", [])}.items()
        ]
        return {
            "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=filters)["Vpcs"]],
            "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=filters)["Subnets"]],
            "route_tables": [
                t["RouteTableId"] for t in ec2.describe_route_tables(Filters=filters)["RouteTables"]
            ],
            "internet_gateways": [
                g["InternetGatewayId"]
                for g in ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]
            ],
            "security_groups": [
                g["GroupId"]
                for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
            ],
            "instances": instances,
            "addresses": [
                a["AllocationId"] for a in ec2.describe_addresses(Filters=filters)["Addresses"]
            ],
            "key_pairs": [
                k["KeyName"] for k in ec2.describe_key_pairs(Filters=filters)["KeyPairs"]
            ],
            "db_instances": db_instances,
            "db_subnet_groups": [
                g["DBSubnetGroupName"]
                for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
                if g["DBSubnetGroupName"].startswith("k3s-ec2-local")
            ],
            "secrets": [
                s["Name"]
                for s in secrets.list_secrets()["SecretList"]
                if s["Name"].startswith("k3s-ec2/local/")
            ],
        }


@pytest.fixture(scope="module")
def aws(moto: MotoServer) -> Aws:
    return Aws(moto)
