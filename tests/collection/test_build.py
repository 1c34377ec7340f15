"""The collection as a user gets it: built by scripts/build-collection.sh, installed into
an empty path, and used by a project of its own (the repository's playbooks and an
inventory, with no collections/ beside them)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.manifests.render import TEST_IMAGE, render_all
from tests.support.ansible import ROOT, ansible_env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("collection")
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-collection.sh"), str(work / "dist")],
        env=ansible_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (work / "dist").glob("devsecops-k3s_ec2-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    # The cluster objects travel with the roles, as files, not as links out of the collection.
    for source, inside in (("manifests", "roles/app_deploy/files/manifests"),
                           ("policies", "roles/app_deploy/files/policies"),
                           ("monitoring", "roles/monitoring/files/monitoring")):  # fmt: skip
        files = {
            str(p.relative_to(ROOT / source)) for p in (ROOT / source).rglob("*") if p.is_file()
        }
        assert {f"{inside}/{f}" for f in files} <= set(names), (
            f"{source}/ is missing from {tarball}"
        )
    install = subprocess.run(
        ["ansible-galaxy", "collection", "install", "--no-deps", "--force",
         "-p", str(work / "installed"), str(tarball)],
        env=ansible_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return work / "installed"


def user_project(tmp_path: Path) -> Path:
    """The playbooks and the dev inventory, without the repository's collections/."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "playbooks", project / "playbooks")
    inventory = project / "inventories" / "dev"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(ROOT / "inventories" / "dev" / "hosts.yml", inventory)
    for path in (ROOT / "inventories" / "dev" / "group_vars" / "all").glob("*.yml"):
        if path.name != "aws.yml":  # rendering reads no AWS
            shutil.copy(path, inventory / "group_vars" / "all")
    return project


def test_the_installed_collection_renders_what_the_repository_renders(
    installed: Path, tmp_path: Path
) -> None:
    project = user_project(tmp_path)
    out = tmp_path / "rendered"
    env = {k: v for k, v in ansible_env().items() if not k.startswith("ANSIBLE_")}
    env |= {"ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_NOCOLOR": "1"}
    settings = {"app_deploy_image": TEST_IMAGE, "app_deploy_render_dir": str(out)}
    result = subprocess.run(
        ["ansible-playbook", "-i", "inventories/dev/hosts.yml", "playbooks/deploy.yml",
         "-e", yaml.safe_dump(settings, default_flow_style=True)],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    found = subprocess.run(
        ["ansible-galaxy", "collection", "list", "devsecops.k3s_ec2"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    paths = [line[2:] for line in found.stdout.splitlines() if line.startswith("# /")]
    assert paths == [str(installed / "ansible_collections")], found.stdout
    expected = render_all()["dev"]
    for name in ("manifests.yaml", "policies.yaml"):
        assert (out / name).read_text() == (expected / name).read_text(), name
