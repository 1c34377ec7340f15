"""Running Ansible and Molecule from the tests the way `make test` does."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "collections/ansible_collections/devsecops/k3s_ec2/roles"


def ansible_env() -> dict[str, str]:
    """The environment `make test` exports: the venv first on PATH, the repo's ansible.cfg."""
    path = os.pathsep.join([str(ROOT / ".venv/bin"), str(ROOT / ".cache/bin"), os.environ["PATH"]])
    return {
        **os.environ,
        "PATH": path,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "ANSIBLE_FORCE_COLOR": "false",
        "ANSIBLE_NOCOLOR": "true",
        "NO_COLOR": "1",
    }


def molecule_test(role: str, actions: tuple[str, ...]) -> None:
    """Build the host images, run `molecule test` for the role's `default` scenario and
    assert that it passed and that each of `actions` reported success."""
    images = subprocess.run(
        ["bash", str(ROOT / "scripts/build-host-images.sh"), "bookworm", "trixie"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert images.returncode == 0, images.stdout + images.stderr
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", "default"],
        cwd=ROLES / role,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, output[-8000:]
    for action in actions:
        # Molecule 26: "[default > idempotence] Executed: Successful" (older: "idempotence: ...").
        assert re.search(rf"\b{action}\W+Executed: Successful", output), output[-4000:]


def controller_inventory(name: str, dest: Path) -> Path:
    """inventories/<name> as the cluster stages see it, copied into `dest`: hosts.yml and
    group_vars, without the AWS settings, the aws_ec2 source and host_vars.

    Those reach AWS (moto in the lab) and the nodes; tests of the deploy and monitoring
    stages against the test control plane give the database and addresses themselves.
    """
    source = ROOT / "inventories" / name
    files = [source / "hosts.yml", *sorted((source / "group_vars" / "all").glob("*.yml"))]
    for path in files:
        if path.name == "aws.yml" or not path.exists():
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return dest


def run_controller_playbook(
    playbook: str,
    inventory: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook -i <inventory without AWS> playbooks/<playbook> ARGS` from the
    repository root, with the controller_inventory() copy in a directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"inventory-{inventory}-") as copy:
        return subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(controller_inventory(inventory, Path(copy))),
                str(ROOT / "playbooks" / playbook),
                *args,
            ],
            cwd=ROOT,
            env=dict(env) if env is not None else ansible_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
