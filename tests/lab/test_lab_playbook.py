"""playbooks/lab.yml refuses bad input before it makes anything, lab-down.yml before it
removes anything (the lab run checks the rest)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_playbook(
    playbook: str, cwd: Path = ROOT, **values: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ansible-playbook",
            str(ROOT / "playbooks" / playbook),
            "-i",
            str(ROOT / "inventories" / "local" / "hosts.yml"),
            # As JSON: a value with a space stays one value.
            "-e",
            json.dumps(values),
        ],
        cwd=cwd,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def lab_playbook(state: Path, **values: str) -> subprocess.CompletedProcess[str]:
    return run_playbook("lab.yml", lab_state=str(state), **values)


GOOD = {
    "lab_network": "k3s-ec2-lab-test",
    "lab_pg_state": "/var/tmp/k3s-ec2-lab-test-postgres",
    "lab_api_port": "16443",
    "lab_mode": "controlplane",
    "lab_agents": "1",
    "lab_pg_port": "5433",
    "lab_image_ref": "ghcr.io/devsecops/webapp@sha256:" + "0" * 64,
}


INPUTS = "lab_mode k3s or controlplane, lab_agents 0 or 1"
PATHS = "lab_state and lab_pg_state absolute normal paths other than /"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"lab_mode": "kind"}, INPUTS),
        ({"lab_agents": "2"}, INPUTS),
        ({"lab_image_ref": "ghcr.io/devsecops/webapp:latest"}, INPUTS),
        ({"lab_network": "lab network"}, PATHS),
        ({"lab_pg_state": "relative/postgres"}, PATHS),
        ({"lab_pg_state": "/"}, PATHS),
        ({"lab_pg_state": "/var/tmp/../.."}, PATHS),
    ],
    ids=["mode", "agents", "image-by-tag", "network-name", "relative-pg-state", "root-pg-state",
         "dotted-pg-state"],
)  # fmt: skip
def test_bad_input_is_refused_before_anything_is_made(
    tmp_path: Path, bad: dict[str, str], message: str
) -> None:
    result = lab_playbook(tmp_path, **{**GOOD, **bad})
    assert result.returncode != 0
    assert message in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_state_directory_the_inventory_does_not_read_is_refused(tmp_path: Path) -> None:
    """The kubeconfig goes where the inventory reads it (the repository's .lab/): a lab made
    elsewhere would leave one there for another lab to trip on."""
    result = lab_playbook(tmp_path, **GOOD)
    assert result.returncode != 0
    assert "is not where the inventory reads the kubeconfig" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lab_state", "kept", PATHS),
        ("lab_pg_state", "kept", PATHS),
        ("lab_state", "{kept}", "is not where the inventory reads the kubeconfig"),
    ],
    ids=["relative-state", "relative-pg-state", "state-dir-not-inventory's"],
)
def test_lab_down_refuses_a_directory_before_removing_anything(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    """A relative directory would be removed wherever the command happens to run; another
    absolute one is not the lab's."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "file").write_text("still here\n")
    paths = {"lab_state": str(tmp_path / "state"), "lab_pg_state": str(tmp_path / "postgres")}
    paths[name] = value.format(kept=kept)
    result = run_playbook("lab-down.yml", cwd=tmp_path, **paths, lab_network="k3s-ec2-lab-test")
    assert result.returncode != 0
    assert message in result.stdout
    assert (kept / "file").read_text() == "still here\n"
