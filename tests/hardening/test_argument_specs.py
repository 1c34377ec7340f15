"""Bad variables are refused by the role's argument specs before any task runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

PLAY = """
- hosts: target
  gather_facts: false
  roles:
    - role: devsecops.k3s_ec2.hardening
"""


def run_role(
    tmp_path: Path, env: dict[str, str], **variables: object
) -> subprocess.CompletedProcess[str]:
    # The target is a container that does not exist: if validation let the input
    # through, the first task would fail as unreachable instead of changing anything.
    (tmp_path / "inventory.ini").write_text(
        "target ansible_connection=containers.podman.podman "
        "ansible_host=hardening-no-such-container\n"
    )
    (tmp_path / "play.yml").write_text(PLAY)
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(tmp_path / "inventory.ini"),
            str(tmp_path / "play.yml"),
            "-e",
            json.dumps(variables),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"hardening_ssh_port": "twenty-two"}, "hardening_ssh_port"),
        ({"hardening_ssh_permit_root_login": "yes"}, "hardening_ssh_permit_root_login"),
        ({"hardening_sysctl_apply": "always"}, "hardening_sysctl_apply"),
        ({"hardening_firewall_http_ports": ["http"]}, "hardening_firewall_http_ports"),
        ({"hardening_firewall_enabled": "maybe"}, "hardening_firewall_enabled"),
        ({"hardening_password_min_classes": 7}, "hardening_password_min_classes"),
        ({"hardening_ssh_kex_classic_fallback": "sometimes"}, "hardening_ssh_kex_classic_fallback"),
        ({"hardening_debsums_cron_check": "hourly"}, "hardening_debsums_cron_check"),
        ({"hardening_aide_checksums": "md5"}, "hardening_aide_checksums"),
    ],
)
def test_bad_variable_is_refused_before_any_change(tmp_path, ansible_env, variables, message):
    result = run_role(tmp_path, ansible_env, **variables)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in out
    assert message in out
    assert "UNREACHABLE" not in out
