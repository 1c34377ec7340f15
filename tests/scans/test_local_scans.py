"""The security scans that can run on this machine, on the real code: bandit, semgrep with
the repository's rules, detect-secrets against the audited baseline, checkov on the
workflows. Each is also shown to fail on a planted finding, so a pass means something.
(gitleaks, trivy and Snyk run only in .github/workflows/ci.yml: see docs/ci-cd.md.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCAN_ENV = {**os.environ, "SEMGREP_ENABLE_VERSION_CHECK": "0", "SEMGREP_SEND_METRICS": "off"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} missing: run `make setup`"
    return path


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False, env=SCAN_ENV
    )


def tracked(*patterns: str) -> list[str]:
    out = run("git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def python_outside_tests() -> list[str]:
    """The Python that ships or runs against real systems: the service, the collection's
    plugins, scripts and benchmarks; test code and Molecule scenarios are excluded."""
    return [p for p in tracked("*.py") if not {"tests", "molecule"} & set(Path(p).parts)]


def test_bandit() -> None:
    targets = python_outside_tests()
    assert any(p.startswith("app/") for p in targets), "no service code found under app/"
    result = run(tool("bandit"), "-q", "-f", "txt", *targets)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit_fails_on_a_planted_finding(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import subprocess\nsubprocess.run('ls ' + x, shell=True)\n")
    result = run(tool("bandit"), "-q", str(tmp_path / "bad.py"))
    assert result.returncode == 1 and "B602" in result.stdout


def test_semgrep() -> None:
    """The repository's rules on the service and every other Python file outside the tests."""
    targets = python_outside_tests()
    result = run(
        tool("semgrep"),
        "scan",
        "--config",
        ".semgrep/",
        "--error",
        "--metrics=off",
        "--quiet",
        *targets,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_detect_secrets(tmp_path: Path) -> None:
    # The hook rewrites the baseline's line numbers in place: give it a copy.
    baseline = tmp_path / "baseline"
    shutil.copy(ROOT / ".secrets.baseline", baseline)
    # Committed files, as gitleaks sees them in CI (and as `detect-secrets scan` lists them).
    committed = run("git", "ls-files").stdout.splitlines()
    files = [p for p in committed if p != ".secrets.baseline" and (ROOT / p).is_file()]
    result = run(tool("detect-secrets-hook"), "--baseline", str(baseline), *files)
    # Exit code 3 only says that audited findings moved to other lines (the copy was
    # rewritten); new findings exit 1 and are listed.
    assert result.returncode in (0, 3) and "Potential secrets" not in result.stdout, (
        result.stdout
        + result.stderr
        + "\nA real secret must go; a false positive is audited into .secrets.baseline "
        "(docs/ci-cd.md)."
    )


def test_detect_secrets_fails_on_a_planted_key(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    shutil.copy(ROOT / ".secrets.baseline", baseline)
    planted = tmp_path / "settings.py"
    # An AWS access key id, assembled so this file itself holds none.
    planted.write_text('AWS_ACCESS_KEY_ID = "' + "AKIA" + "QWERTYUIOPASDFGH" + '"\n')
    # The hook only scans files inside the git work tree it runs in.
    run("git", "init", "-q", cwd=tmp_path)
    result = run(tool("detect-secrets-hook"), "--baseline", "baseline", "settings.py", cwd=tmp_path)
    assert result.returncode != 0 and "AWS Access Key" in result.stdout, result.stdout


def test_checkov_workflows(tmp_path: Path) -> None:
    """One checkov run over a copy of the workflows plus a planted bad one: the planted one
    must fail (the scanner works) and the real ones must not."""
    workflows = tmp_path / ".github" / "workflows"
    shutil.copytree(ROOT / ".github" / "workflows", workflows)
    (workflows / "planted-bad.yml").write_text(
        "on: issues\npermissions: write-all\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo '${{ github.event.issue.title }}'\n"
    )
    result = run(
        tool("checkov"),
        "-d",
        str(workflows),
        "--framework",
        "github_actions",
        "--output",
        "json",
        "--compact",
        "--skip-download",
    )
    report = json.loads(result.stdout)
    failed = report["results"]["failed_checks"]
    planted = {c["check_id"] for c in failed if c["file_path"].endswith("planted-bad.yml")}
    real = [
        f"{c['check_id']} {c['file_path']}: {c['check_name']}"
        for c in failed
        if not c["file_path"].endswith("planted-bad.yml")
    ]
    assert planted, "checkov found nothing in the planted workflow"
    assert not real, "\n".join(real)


def test_gitleaks_history() -> None:
    """CI's secrets gate on the whole git history with the repository's config. gitleaks is
    built from its Go module (github.com/zricethezav/gitleaks/v8) when it is on PATH."""
    gitleaks = shutil.which("gitleaks")
    if not gitleaks:
        pytest.skip("gitleaks not installed: it runs in CI (see docs/ci-cd.md)")
    result = run(gitleaks, "git", "--config", ".gitleaks.toml", "--no-banner", "--redact", ".")
    assert result.returncode == 0, result.stdout + result.stderr
