"""The k3s role's Molecule scenario `default`, run as a user would run it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.k3s.conftest import ROLE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.molecule]


@pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed: run `make setup`")
def test_molecule_default_scenario_passes(ansible_env: dict[str, str]) -> None:
    """check on new hosts, converge, idempotence (0 changed), verify, destroy: server + agent."""
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
        cwd=ROLE,
        env=ansible_env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    # Molecule 26 reports each action as "[default > idempotence] Executed: Successful".
    for action in ("check", "idempotence", "verify"):
        assert re.search(rf"default\W+{action}\W+Executed: Successful", output), output[-4000:]
