"""CI's build job reads the image digest from the OCI archive it scans and pushes; the
step runs here as bash, exactly as written in ci.yml, on archives made in the test."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.workflows.gha import WORKFLOWS, load_workflow

DIGEST = "sha256:" + "e3" * 32


def digest_script() -> str:
    ci = load_workflow(WORKFLOWS / "ci.yml")
    step = next(s for s in ci["jobs"]["build"]["steps"] if s.get("id") == "digest")
    return step["run"]


def oci_archive(path: Path, index: object) -> None:
    with tarfile.open(path, "w") as tar:
        for name, body in {
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": json.dumps(index).encode(),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def run_step(tmp_path: Path) -> tuple[int, str, str]:
    output = tmp_path / "output"
    output.write_text("")
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", digest_script()],
        env={
            **os.environ,
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, output.read_text(), result.stderr


def test_the_manifest_digest_becomes_the_job_output(tmp_path: Path) -> None:
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST}
    oci_archive(tmp_path / "webapp.oci.tar", {"schemaVersion": 2, "manifests": [manifest]})
    code, output, err = run_step(tmp_path)
    assert code == 0, err
    assert output == f"digest={DIGEST}\n"


@pytest.mark.parametrize(
    "index",
    [{"schemaVersion": 2, "manifests": []}, {"manifests": [{"digest": "sha256:short"}]}],
)
def test_an_archive_without_a_digest_fails_the_build(tmp_path: Path, index: object) -> None:
    oci_archive(tmp_path / "webapp.oci.tar", index)
    code, output, err = run_step(tmp_path)
    assert code != 0 and "no digest" in err
    assert output == ""
