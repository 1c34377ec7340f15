"""`ansible-test sanity` passes on the collection, every test ansible-core ships, each in
the virtualenv ansible-test makes for it from PyPI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import ansible_test
import pytest

from tests.support.ansible import ROOT

pytestmark = pytest.mark.slow

COLLECTION = ROOT / "collections/ansible_collections/devsecops/k3s_ec2"


def pip_version() -> str:
    """The pip ansible-test bootstraps into its virtualenvs."""
    source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    found = re.search(r"pip='(\d+(?:\.\d+)*)'", source.read_text())
    assert found, f"no pip version in {source}"
    return found.group(1)


def test_ansible_test_sanity_passes(tmp_path: Path) -> None:
    # ansible-test reads its bootstrap script from ~/.ansible/test/cache: a HOME of the test's own.
    cache = tmp_path / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True)
    shutil.copy(
        Path(__file__).parent / "data" / "get_pip_offline.py",
        cache / f"get_pip_{pip_version().replace('.', '_')}.py",
    )
    result = subprocess.run(
        ["ansible-test", "sanity", "--venv", "--python", "3.11", "--color", "no"],
        cwd=COLLECTION,
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        "\n".join(line for line in output.splitlines() if line.startswith(("ERROR", "FATAL")))
        or output[-4000:]
    )
    assert "Running sanity test" in output
