"""meta/runtime.yml's requires_ansible is the oldest ansible-core the roles really run on:
that core, in a virtualenv of its own, checks every inventory's contract and renders what
the pinned core renders. (2.17 cannot: the roles end early with `meta: end_role`, new in 2.18.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.manifests.render import TEST_IMAGE, render_all
from tests.support.ansible import ROOT, ansible_env
from tests.support.resolve import WORKFLOW_ENV

# The newest patch release of the oldest core meta/runtime.yml admits.
OLDEST_CORE = "2.18.19"
COLLECTION = ROOT / "collections/ansible_collections/devsecops/k3s_ec2"


def test_requires_ansible_names_the_core_tested_here() -> None:
    runtime = yaml.safe_load((COLLECTION / "meta/runtime.yml").read_text())
    major_minor = ".".join(OLDEST_CORE.split(".")[:2])
    assert runtime["requires_ansible"] == f">={major_minor}.0"
    for meta in COLLECTION.glob("roles/*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"] == major_minor


@pytest.mark.slow
def test_the_oldest_core_checks_the_contracts_and_renders_the_same(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check",
         f"ansible-core=={OLDEST_CORE}", "netaddr==1.3.0"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    site = next((ROOT / ".venv/lib").glob("python3*/site-packages"))
    env = {**ansible_env(), **WORKFLOW_ENV}
    # The repository's collection first, its dependencies from the pinned `ansible` package.
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{ROOT / 'collections'}:{site}"

    def playbook(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin/ansible-playbook"), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    version = subprocess.run(
        [str(venv / "bin/ansible"), "--version"], capture_output=True, text=True, check=True
    )
    assert f"core {OLDEST_CORE}]" in version.stdout
    for inventory in ("local", "dev", "prod", "e2e"):
        result = playbook("-i", f"inventories/{inventory}/hosts.yml", "playbooks/contract.yml")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = tmp_path / "rendered"
    settings = {"app_deploy_image": TEST_IMAGE, "app_deploy_render_dir": str(out)}
    result = playbook(
        "-i", "inventories/dev/hosts.yml", "playbooks/deploy.yml", "-e", json.dumps(settings)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for name in ("manifests.yaml", "policies.yaml"):
        assert (out / name).read_text() == (render_all()["dev"] / name).read_text(), name
