"""Render the service's manifests and admission policies for an inventory.

The rendering is the app_deploy role's own: `playbooks/deploy.yml` run with
`app_deploy_render_dir`, which writes the same template lookups the role applies.
Other suites (the control-plane tests) reuse `render()` to apply the very same files.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from tests.support.ansible import ansible_env as make_test_env
from tests.support.ansible import run_controller_playbook

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ("local", "dev", "prod")
# A digest-pinned reference of the allowed owner, as CD passes it.
TEST_IMAGE = "ghcr.io/devsecops/webapp@sha256:" + "5f" * 32
# A second build of the service, to see what changes with the image.
OTHER_IMAGE = "ghcr.io/devsecops/webapp:sha-0badc0de@sha256:" + "a1" * 32
# The commit CD records on the Deployment it deploys (app_deploy_source_revision).
SOURCE_REVISION = "c0ffee" * 6 + "c0de"
# Variants rendered alongside the inventories: name -> (inventory, image, extra vars).
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dev-other-image": ("dev", OTHER_IMAGE, {"app_deploy_source_revision": SOURCE_REVISION}),
    # Every inventory runs Prometheus in `monitoring`: elsewhere, it must be admitted from there.
    "dev-observability": ("dev", TEST_IMAGE, {"k3s_ec2_monitoring_namespace": "observability"}),
    "prod-rate-limit": ("prod", TEST_IMAGE, {"app_deploy_ingress_rate_average": 20}),
    "dev-other-owner": (
        "dev",
        "ghcr.io/acme/webapp@sha256:" + "b2" * 32,
        {"app_deploy_ghcr_owner": "acme"},
    ),
}


def ansible_env() -> dict[str, str]:
    # A GHCR token in the caller's environment must not leak into rendered test files.
    return {**make_test_env(), "GHCR_TOKEN": ""}


def render(
    inventory: str,
    dest: Path,
    image: str = TEST_IMAGE,
    extra_vars: Mapping[str, Any] | None = None,
) -> Path:
    """Render `inventory` into `dest`/manifests.yaml (apply order) and `dest`/policies.yaml."""
    # Rendering reads no AWS: the inventory without its AWS settings and aws_ec2 source.
    settings = {"app_deploy_image": image, "app_deploy_render_dir": str(dest), **(extra_vars or {})}
    result = run_controller_playbook(
        "deploy.yml", inventory, "-e", yaml.safe_dump(settings, default_flow_style=True),
        env=ansible_env(),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"rendering {inventory} failed:\n{result.stdout}\n{result.stderr}")
    return dest


@functools.cache
def render_all() -> dict[str, Path]:
    """Render each inventory and each of VARIANTS once per test session, in parallel."""
    base = Path(tempfile.mkdtemp(prefix="webapp-manifests-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    jobs = {inv: (inv, TEST_IMAGE, {}) for inv in INVENTORIES} | VARIANTS
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {
            key: pool.submit(render, inv, base / key, image, extra)
            for key, (inv, image, extra) in jobs.items()
        }
        return {key: future.result() for key, future in futures.items()}


def documents(directory: Path, pattern: str = "*.yaml") -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every non-empty YAML document of the rendered files, with the file it came from."""
    for path in sorted(directory.glob(pattern)):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def objects(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Rendered objects keyed by (kind, name)."""
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in documents(directory)}
