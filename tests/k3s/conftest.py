"""Paths and environment for running the k3s role the way `make test` does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "collections/ansible_collections/devsecops/k3s_ec2/roles/k3s"


@pytest.fixture(scope="session")
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
