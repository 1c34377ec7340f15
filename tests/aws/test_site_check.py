"""site.yml with the dev and prod inventories exactly as committed, in check mode against moto.

No AWS account is reachable here; what can be shown is that every value those
inventories set passes every stage's checks and that a first `--check --diff` runs the
whole playbook through, says what it would create, and creates nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import boto3
import pytest

from tests.aws.conftest import ROOT, Runner

IMAGE = "ghcr.io/devsecops/webapp@sha256:" + "5f" * 32


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_first_check_run_goes_through_every_stage_and_creates_nothing(
    env: str, runner: Runner, tmp_path: Path
) -> None:
    runner.moto.reset()
    result = subprocess.run(
        [
            "ansible-playbook", "-i", str(ROOT / "inventories" / env),
            str(ROOT / "playbooks" / "site.yml"), "--check", "--diff",
            "-e", f"app_deploy_image={IMAGE}",
        ],
        cwd=ROOT,
        env={
            **runner.env(),
            # The inventories read these from the operator's environment.
            "K3S_EC2_ADMIN_CIDRS": "203.0.113.0/24",
            "GRAFANA_ADMIN_PASSWORD": "check-mode-only-password",  # pragma: allowlist secret
            # A home without ~/.kube: the cluster does not exist yet either.
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"Check mode: VPC k3s-ec2-{env}" in output
    assert "Check mode: no VPC yet, so the nodes are not planned" in output
    assert "Check mode: no kubeconfig at" in output  # deploy and monitoring
    assert "skipping: no hosts matched" in output  # no node exists to harden
    assert created_in_moto(runner, env) == {}


def created_in_moto(runner: Runner, env: str) -> dict[str, list[str]]:
    """What carries the environment's tags in moto, in the inventory's region, by kind."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    )
    url = runner.moto.endpoint_url
    ec2, rds = session.client("ec2", endpoint_url=url), session.client("rds", endpoint_url=url)
    secrets = session.client("secretsmanager", endpoint_url=url)
    tags = [{"Name": "tag:Environment", "Values": [env]}]
    found = {
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=tags)["Vpcs"]],
        "security_groups": [
            g["GroupId"] for g in ec2.describe_security_groups(Filters=tags)["SecurityGroups"]
        ],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=tags)["KeyPairs"]],
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=tags)["Reservations"]
            for i in r["Instances"]
        ],
        "databases": [
            d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]
        ],
        "secrets": [s["Name"] for s in secrets.list_secrets()["SecretList"]],
    }
    return {kind: ids for kind, ids in found.items() if ids}
