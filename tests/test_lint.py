"""Lint gates: each linter the CI workflow runs, run here on the whole repository."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workflows.gha import WORKFLOWS, load_workflow, steps

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
    # CI's ansible-lint step, command and environment, the one place they are written (its
    # inventory: the lab's static hosts, not the aws_ec2 source that would ask moto).
    ci = load_workflow(WORKFLOWS / "ci.yml")
    step = next(
        step
        for job in ci["jobs"].values()
        for step in steps(job)
        if step.get("run", "").startswith("ansible-lint ")
    )
    workspace = "${{ github.workspace }}"
    env = {**os.environ, **{k: v.replace(workspace, str(ROOT)) for k, v in step["env"].items()}}
    result = subprocess.run(
        shlex.split(step["run"]),
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
