"""The aws_ec2 sources of the AWS inventories find the nodes alike and match their group_vars.

Inventory plugins cannot read group_vars, so each source repeats its environment's tag
values and region; these tests catch the copies drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ("local", "dev", "prod")
# What decides host names, groups and connection variables: the same for every environment.
SHAPE = ("plugin", "hostnames", "hostvars_prefix", "keyed_groups", "compose", "strict")


def source(env: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "inventories" / env / "aws_ec2.yml").read_text())


def group_vars(env: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((ROOT / "inventories" / env / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def test_every_source_builds_hosts_and_groups_alike() -> None:
    shapes = {env: {key: source(env).get(key) for key in SHAPE} for env in ENVIRONMENTS}
    assert shapes["local"] == shapes["dev"] == shapes["prod"]
    keyed = shapes["dev"]["keyed_groups"]
    assert keyed == [{"key": "aws_tags.K3sRole", "prefix": "k3s", "separator": "_"}]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_source_filters_by_the_environments_own_tags_and_region(env: str) -> None:
    config, settings = source(env), group_vars(env)
    assert config["filters"] == {
        "tag:Project": settings["k3s_ec2_project"],
        "tag:Environment": settings["k3s_ec2_env"],
        "tag:ManagedBy": "devsecops.k3s_ec2",
        "instance-state-name": "running",
    }
    assert config["regions"] == [settings["aws_region"]]


def test_only_the_lab_source_names_an_endpoint() -> None:
    assert "endpoint_url" not in source("dev") and "endpoint_url" not in source("prod")
    assert "AWS_ENDPOINT_URL" in source("local")["endpoint_url"]
