"""CD's resolve step, run as bash exactly as written in cd.yml. GHCR is not reachable
here, so `skopeo` is a stand-in that answers from a table of tags and digests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.gha import WORKFLOWS, load_workflow

SHA = "a" * 40
DIGEST = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64
IMAGE = "ghcr.io/acme/webapp"

SKOPEO = """#!/usr/bin/env bash
# Answers `skopeo inspect --format ... docker://REF` from $FAKE_REGISTRY ("REF DIGEST" lines).
case "$1" in
  login|logout) cat >/dev/null 2>&1 || true; exit 0 ;;
  inspect) ref=${!#}; ref=${ref#docker://}
    while read -r known digest; do
      if [[ $known == "$ref" ]]; then echo "$digest"; exit 0; fi
    done < "$FAKE_REGISTRY"
    echo "manifest unknown: $ref" >&2; exit 1 ;;
esac
exit 2
"""


def resolve_script() -> str:
    cd = load_workflow(WORKFLOWS / "cd.yml")
    step = next(s for s in cd["jobs"]["resolve"]["steps"] if s.get("id") == "resolve")
    return step["run"]


def run_resolve(tmp_path: Path, registry: dict[str, str], **env: str) -> tuple[int, dict, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    skopeo = bin_dir / "skopeo"
    skopeo.write_text(SKOPEO)
    skopeo.chmod(0o755)
    (tmp_path / "registry").write_text("".join(f"{r} {d}\n" for r, d in registry.items()))
    output = tmp_path / "output"
    output.write_text("")
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_REGISTRY": str(tmp_path / "registry"),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_REPOSITORY_OWNER": "Acme",
        "GITHUB_SHA": SHA,
        "RUNNER_TEMP": str(tmp_path),
        "REGISTRY_USER": "ci",
        "REGISTRY_TOKEN": "token",
        "INPUT_ENVIRONMENT": "",
        "INPUT_DIGEST": "",
        "CI_HEAD_SHA": "",
        **env,
    }
    result = subprocess.run(
        # The shell GitHub runs `run:` steps with on Linux.
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", resolve_script()],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    outputs: dict[str, Any] = dict(
        line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
    )
    return result.returncode, outputs, result.stdout + result.stderr


def write_record(tmp_path: Path, text: str) -> None:
    record = tmp_path / "ci-record"
    record.mkdir(exist_ok=True)
    (record / "image-ref.txt").write_text(text)


def test_after_ci_it_deploys_the_recorded_digest_to_dev(tmp_path: Path) -> None:
    write_record(tmp_path, f"{IMAGE}@{DIGEST}\n")
    code, out, log = run_resolve(
        tmp_path, {f"{IMAGE}:{SHA}": DIGEST}, EVENT_NAME="workflow_run", CI_HEAD_SHA=SHA
    )
    assert code == 0, log
    assert out == {"environment": "dev", "sha": SHA, "image": IMAGE, "digest": DIGEST}


def test_a_retagged_image_is_refused(tmp_path: Path) -> None:
    write_record(tmp_path, f"{IMAGE}@{DIGEST}\n")
    code, out, log = run_resolve(
        tmp_path, {f"{IMAGE}:{SHA}": OTHER}, EVENT_NAME="workflow_run", CI_HEAD_SHA=SHA
    )
    assert code != 0 and "CI recorded" in log
    assert "digest" not in out


def test_an_image_ci_never_pushed_is_refused(tmp_path: Path) -> None:
    write_record(tmp_path, f"{IMAGE}@{DIGEST}\n")
    code, _, log = run_resolve(tmp_path, {}, EVENT_NAME="workflow_run", CI_HEAD_SHA=SHA)
    assert code != 0 and "did CI push it?" in log


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_by_hand_with_a_digest(tmp_path: Path, environment: str) -> None:
    code, out, log = run_resolve(
        tmp_path,
        {f"{IMAGE}@{OTHER}": OTHER},
        EVENT_NAME="workflow_dispatch",
        INPUT_ENVIRONMENT=environment,
        INPUT_DIGEST=OTHER,
    )
    assert code == 0, log
    assert out["environment"] == environment and out["digest"] == OTHER


@pytest.mark.parametrize(
    ("environment", "digest", "message"),
    [
        ("staging", "", "unknown environment"),
        ("prod", "sha256:abc", "must look like"),
        ("prod", "latest; rm -rf /", "must look like"),
        ("prod", "sha256:" + "d" * 64, "is not in GHCR"),
    ],
)
def test_by_hand_bad_input_is_refused(
    tmp_path: Path, environment: str, digest: str, message: str
) -> None:
    code, out, log = run_resolve(
        tmp_path,
        {f"{IMAGE}:{SHA}": DIGEST},
        EVENT_NAME="workflow_dispatch",
        INPUT_ENVIRONMENT=environment,
        INPUT_DIGEST=digest,
    )
    assert code != 0 and message in log, log
    assert out == {}
