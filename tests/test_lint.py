"""Lint gates: each linter the CI workflow runs, run here on the whole repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)


def tracked(*patterns: str) -> list[str]:
    out = run("git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns).stdout
    return [p for p in out.split() if Path(ROOT, p).is_file()]


def test_ruff_check() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint() -> None:
    result = run("yamllint", "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        # The lab's default inventory asks moto for its nodes: every syntax check would
        # wait out botocore's retries (7 s each) when no lab runs. Linting needs no hosts.
        "ANSIBLE_INVENTORY": str(ROOT / "inventories/local/hosts.yml"),
    }
    result = subprocess.run(
        ["ansible-lint", "--profile", "production", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck() -> None:
    scripts = tracked("*.sh", ".ci/run")
    assert scripts, "no shell scripts found"
    result = run("shellcheck", "--severity=style", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    workflows = tracked(".github/workflows/*.yml")
    if not workflows:
        pytest.skip("no workflows yet")
    actionlint = shutil.which("actionlint")
    assert actionlint, "actionlint missing: run `make setup`"
    result = run(actionlint, "-shellcheck", shutil.which("shellcheck") or "", *workflows)
    assert result.returncode == 0, result.stdout + result.stderr
