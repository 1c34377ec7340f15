"""The hardening role's Molecule scenario, run as a user would run it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.hardening.conftest import ROLE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.molecule]


@pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed: run `make setup`")
def test_molecule_default_scenario_passes(ansible_env: dict[str, str]) -> None:
    """create, converge, idempotence (0 changed), verify, destroy on Debian 12 and 13."""
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
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert result.returncode == 0, output[-8000:]
    for step in ("converge", "idempotence", "verify"):
        # Molecule prints "[default > idempotence] Executed: Successful" (older: "idempotence: ...").
        assert re.search(rf"\b{step}\]?:? Executed: Successful", output), output[-4000:]
