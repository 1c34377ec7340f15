"""Bad k3s variables are refused with a clear message before the role touches a node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

PLAY = """
- hosts: k3s_server
  gather_facts: false
  roles:
    - role: devsecops.k3s_ec2.k3s
"""

# One host per case, all in one run. The hosts are containers that do not exist: input that
# got past the checks would fail as unreachable instead of changing anything.
CASES: dict[str, tuple[dict[str, object], str]] = {
    "no-v-prefix": (
        {"k3s_version": "1.35.4"},
        "k3s_version must look like v1.35.4+k3s1 (got 1.35.4)",
    ),
    "injected": ({"k3s_version": "v1.35.4+k3s1; rm -rf /"}, "k3s_version must look like"),
    "short-sum": ({"k3s_checksum": "abc123"}, "k3s_checksum must be empty or a sha256 of 64 hex"),
    "node-role": ({"k3s_node_role": "master"}, "k3s_node_role must be one of: server, agent"),
    "datastore": ({"k3s_datastore": "mysql"}, "k3s_datastore must be one of: embedded, rds"),
    "no-rds": (
        {"k3s_datastore": "rds"},
        "k3s_datastore is rds but the RDS stage's facts are missing",
    ),
    "token": ({"k3s_token": "short token"}, "k3s_token must be at least 16 characters"),
    "agent-token": (
        {"k3s_agent_token": "short agent token"},  # pragma: allowlist secret
        "k3s_agent_token must be at least 16 characters",
    ),
    "agent-token-is-server-token": (
        {
            "k3s_token": "same-token-for-both-1234",  # pragma: allowlist secret
            "k3s_agent_token": "same-token-for-both-1234",  # pragma: allowlist secret
        },
        "k3s_agent_token must differ from k3s_token",
    ),
    "config": ({"k3s_config": ["not", "a", "dict"]}, "k3s_config"),
    "acme-over-plain-http": (
        {
            "k3s_traefik_acme_resolver": "letsencrypt",
            "k3s_traefik_acme_server": "http://ca.example/dir",
            "k3s_disable": [],
        },
        'k3s_traefik_acme_server an https:// directory URL (got "http://ca.example/dir")',
    ),
    "acme-without-traefik": (
        {"k3s_traefik_acme_resolver": "letsencrypt", "k3s_disable": ["traefik", "servicelb"]},
        "and Traefik must be deployed (an exposure through the Ingress)",
    ),
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> dict:
    """Run the role once on every case; return each host's failed task result."""
    tmp: Path = tmp_path_factory.mktemp("k3s-validation")
    hosts = {
        name: {
            "ansible_connection": "containers.podman.podman",
            "ansible_host": f"k3s-no-such-container-{name}",
            **variables,
        }
        for name, (variables, _) in CASES.items()
    }
    (tmp / "inventory.json").write_text(json.dumps({"k3s_server": {"hosts": hosts}}))
    (tmp / "play.yml").write_text(PLAY)
    result = subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.json"), str(tmp / "play.yml")],
        env={**ansible_env, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    report = json.loads(result.stdout)
    failed: dict[str, dict] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, res in task["hosts"].items():
                if res.get("failed") or res.get("unreachable"):
                    failed.setdefault(host, {**res, "task": task["task"]["name"]})
    return {"failed": failed, "raw": result.stdout + result.stderr}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_is_refused_before_any_change(failures: dict, case: str) -> None:
    result = failures["failed"].get(case)
    assert result, f"{case} was not refused"
    assert not result.get("unreachable"), f"{case} reached the node: {result}"
    message = " ".join(str(result.get("msg", "")).split())
    assert CASES[case][1] in message, message


def test_token_value_is_never_printed(failures: dict) -> None:
    for value in ("short token", "short agent token", "same-token-for-both-1234"):
        assert value not in failures["raw"]
