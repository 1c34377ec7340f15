"""The workflows' security and ordering properties, read from the YAML itself."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.gha import (
    ROOT,
    WORKFLOWS,
    ancestors,
    evaluate,
    job_text,
    steps,
)

SHA_PIN = re.compile(r"^[\w.\-]+/[\w.\-/]+@[0-9a-f]{40}$")
# What each security gate runs, in the order CI must run them.
SCAN_ORDER = [
    ("secrets", "gitleaks/gitleaks-action"),
    ("SAST", "semgrep scan"),
    ("SAST", "bandit "),
    ("SCA", "pip-audit "),
    ("IaC", "checkov "),
    ("build", "docker/build-push-action"),
    ("image scan", "aquasecurity/trivy-action"),
    ("SBOM", "anchore/sbom-action"),
]
OIDC_MARKERS = ("aws-actions/configure-aws-credentials", "cosign sign")
REGISTRY_WRITE_MARKERS = ("skopeo copy", "cosign sign", "docker push")


def job_running(jobs: dict[str, Any], marker: str) -> str:
    found = [name for name, job in jobs.items() if marker in job_text(job)]
    assert len(found) == 1, f"expected one job running {marker!r}, found {found}"
    return found[0]


def test_every_workflow_is_present(workflows: dict[str, Any]) -> None:
    assert {"ci.yml", "cd.yml", "e2e.yml"} <= set(workflows)


def test_zizmor_finds_nothing_high() -> None:
    zizmor = shutil.which("zizmor")
    assert zizmor, "zizmor missing: run `make setup`"
    result = subprocess.run(
        [zizmor, "--offline", "--format", "json", "--persona", "auditor", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    high = [
        f"{f['ident']}: {f['desc']} at {f['locations'][0]['symbolic']['key']}"
        for f in findings
        if f["determinations"]["severity"] == "High" and not f.get("ignored")
    ]
    assert not high, "\n".join(high)


def test_every_action_is_pinned_to_a_commit(workflows: dict[str, Any]) -> None:
    bad = []
    for name, wf in workflows.items():
        text = (WORKFLOWS / name).read_text()
        for job_name, job in wf["jobs"].items():
            for step in steps(job):
                uses = step.get("uses")
                if uses is None or uses.startswith("./"):
                    continue
                if not SHA_PIN.match(uses):
                    bad.append(f"{name}:{job_name}: {uses}")
                # The tag travels with the SHA so a reader (and Dependabot) knows the version.
                elif not re.search(re.escape(uses) + r" # v?\d", text):
                    bad.append(f"{name}:{job_name}: {uses} lacks a '# vX.Y.Z' comment")
    assert not bad, "\n".join(bad)


def test_container_images_are_pinned_by_digest(workflows: dict[str, Any]) -> None:
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            container = job.get("container")
            if container:
                image = container["image"] if isinstance(container, dict) else container
                assert "@sha256:" in image, f"{name}:{job_name} runs {image} by tag"


def test_top_level_permissions_are_empty(workflows: dict[str, Any]) -> None:
    for name, wf in workflows.items():
        assert wf.get("permissions") == {}, f"{name}: top-level permissions must be {{}}"
        for job_name, job in wf["jobs"].items():
            assert "permissions" in job, f"{name}:{job_name} must declare its permissions"
            assert job["permissions"] not in ("write-all", "read-all"), f"{name}:{job_name}"


def test_id_token_only_where_oidc_is_used(workflows: dict[str, Any]) -> None:
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            uses_oidc = any(m in job_text(job) for m in OIDC_MARKERS)
            has_token = job["permissions"].get("id-token") == "write"
            assert uses_oidc == has_token, (
                f"{name}:{job_name}: id-token: write {'missing' if uses_oidc else 'not needed'}"
            )


def test_packages_write_only_where_the_registry_is_written(workflows: dict[str, Any]) -> None:
    writers = []
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            writes = any(m in job_text(job) for m in REGISTRY_WRITE_MARKERS)
            has_write = job["permissions"].get("packages") == "write"
            assert writes == has_write, (
                f"{name}:{job_name}: packages: write {'missing' if writes else 'not needed'}"
            )
            if has_write:
                writers.append(f"{name}:{job_name}")
    assert writers == ["ci.yml:push", "ci.yml:sign"]


def test_no_job_writes_contents_or_other_scopes(workflows: dict[str, Any]) -> None:
    allowed = {"id-token", "packages"}
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            for scope, level in job["permissions"].items():
                assert level != "write" or scope in allowed, f"{name}:{job_name}: {scope}: write"


def test_checkouts_do_not_keep_the_token(workflows: dict[str, Any]) -> None:
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            for step in steps(job):
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, (
                        f"{name}:{job_name}: checkout without persist-credentials: false"
                    )


def test_run_scripts_never_interpolate_expressions(workflows: dict[str, Any]) -> None:
    """Values reach scripts through env:, so no event field can become shell code."""
    for name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            for step in steps(job):
                assert "${{" not in str(step.get("run", "")), (
                    f"{name}:{job_name}: step {step.get('name')!r} interpolates into its script"
                )


def test_every_workflow_has_a_concurrency_group(workflows: dict[str, Any]) -> None:
    for name, wf in workflows.items():
        assert wf.get("concurrency", {}).get("group"), f"{name} lacks a concurrency group"


def test_ci_runs_on_pull_requests_and_pushes_to_main(ci: dict[str, Any]) -> None:
    assert ci["on"]["push"]["branches"] == ["main"]
    assert ci["on"]["pull_request"]["branches"] == ["main"]


def test_scans_run_in_order_after_lint_and_tests(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    chain = [job_running(jobs, marker) for _, marker in SCAN_ORDER]
    first = chain[0]
    for gate in ("ruff check", "make test-fast", "molecule test", "ansible-lint", "actionlint"):
        assert job_running(jobs, gate) in ancestors(jobs, first), f"{gate} must run before scans"
    for earlier, later in itertools.pairwise(chain):
        if earlier != later:
            assert earlier in ancestors(jobs, later), f"{later} must wait for {earlier}"


def test_push_waits_for_every_other_job(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    push = job_running(jobs, "skopeo copy")
    sign = job_running(jobs, "cosign sign")
    assert ancestors(jobs, push) == set(jobs) - {push, sign}
    assert push in ancestors(jobs, sign)


@pytest.mark.parametrize(
    ("event", "ref", "pushes"),
    [
        ("push", "refs/heads/main", True),
        ("pull_request", "refs/pull/7/merge", False),
        ("push", "refs/heads/feature", False),
    ],
)
def test_push_only_for_a_push_to_main(
    ci: dict[str, Any], event: str, ref: str, pushes: bool
) -> None:
    push = ci["jobs"][job_running(ci["jobs"], "skopeo copy")]
    context = {"github": {"event_name": event, "ref": ref}}
    assert evaluate(push["if"], context) is pushes


def test_every_pushed_image_is_signed_with_its_sbom_attested(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    sign = jobs[job_running(jobs, "cosign sign")]
    # No condition of its own: it runs whenever push ran (and only then, through needs).
    assert "if" not in sign and sign["needs"] == job_running(jobs, "skopeo copy")
    run = "\n".join(str(s.get("run", "")) for s in steps(sign))
    assert 'cosign sign --yes "$IMAGE@$DIGEST"' in run
    assert "cosign attest --yes --type cyclonedx" in run and '"$IMAGE@$DIGEST"' in run
    sbom_artifact = next(
        s["with"]["name"] for s in steps(jobs["sbom"]) if "upload-artifact" in s.get("uses", "")
    )
    assert any(s.get("with", {}).get("name") == sbom_artifact for s in steps(sign))


def test_cd_verifies_ci_s_signature_before_any_playbook(cd: dict[str, Any]) -> None:
    deploy = steps(cd["jobs"]["deploy"])
    runs = [str(s.get("run", "")) for s in deploy]
    verify = next(i for i, run in enumerate(runs) if "cosign verify " in run)
    assert verify < min(i for i, run in enumerate(runs) if "ansible-playbook" in run)
    assert verify < min(
        i for i, s in enumerate(deploy) if "configure-aws-credentials" in s.get("uses", "")
    )
    step = deploy[verify]
    # The signer: this repository's CI workflow on main, as GitHub's OIDC issuer vouches.
    assert step["env"]["IDENTITY"] == (
        "https://github.com/${{ github.repository }}/.github/workflows/ci.yml@refs/heads/main"
    )
    assert step["env"]["ISSUER"] == "https://token.actions.githubusercontent.com"
    assert (WORKFLOWS / "ci.yml").exists() and "cosign sign" in (WORKFLOWS / "ci.yml").read_text()
    for command in ("cosign verify ", "cosign verify-attestation --type cyclonedx "):
        line = step["run"].split(command, 1)[1].split("$NEW_IMAGE", 1)[0]
        assert '--certificate-identity "$IDENTITY"' in line, command
        assert '--certificate-oidc-issuer "$ISSUER"' in line, command
    assert not re.search(r"regexp|insecure|--allow|skip", step["run"]), step["run"]
    assert "continue-on-error" not in step and "if" not in step


def test_scanners_fail_on_findings(ci: dict[str, Any]) -> None:
    jobs = ci["jobs"]
    for job in jobs.values():
        for step in steps(job):
            assert not step.get("continue-on-error"), f"{step.get('name')} ignores its failure"
    trivy = next(
        s
        for s in steps(jobs[job_running(jobs, "aquasecurity/trivy-action")])
        if "trivy" in s.get("uses", "")
    )
    assert trivy["with"]["exit-code"] == "1"
    assert set(trivy["with"]["severity"].split(",")) == {"HIGH", "CRITICAL"}
    sast = job_text(jobs[job_running(jobs, "semgrep scan")])
    assert "--config .semgrep/" in sast and "--error" in sast


def test_cd_follows_ci_by_its_name(ci: dict[str, Any], cd: dict[str, Any]) -> None:
    trigger = cd["on"]["workflow_run"]
    assert trigger["workflows"] == [ci["name"]]
    assert trigger["types"] == ["completed"]
    assert trigger["branches"] == ["main"]
    dispatch = cd["on"]["workflow_dispatch"]["inputs"]
    assert dispatch["environment"]["type"] == "choice"
    assert dispatch["environment"]["options"] == ["dev", "prod"]


def _run(conclusion: str, branch: str = "main", event: str = "push", repo: str = "o/r") -> dict:
    return {
        "github": {
            "event_name": "workflow_run",
            "repository": "o/r",
            "event": {
                "workflow_run": {
                    "conclusion": conclusion,
                    "head_branch": branch,
                    "event": event,
                    "head_repository": {"full_name": repo},
                }
            },
        }
    }


@pytest.mark.parametrize(
    ("context", "runs"),
    [
        (_run("success"), True),
        (_run("failure"), False),
        (_run("cancelled"), False),
        (_run("success", branch="feature"), False),
        (_run("success", event="pull_request"), False),
        (_run("success", repo="fork/r"), False),
        ({"github": {"event_name": "workflow_dispatch"}}, True),
    ],
)
def test_cd_runs_only_after_ci_succeeded_on_main_or_by_hand(
    cd: dict[str, Any], context: dict, runs: bool
) -> None:
    jobs = cd["jobs"]
    roots = [name for name, job in jobs.items() if not job.get("needs")]
    for name in roots:
        assert evaluate(jobs[name]["if"], context) is runs, f"{name} gate for {context}"
    # Every other job hangs off a gated root, so nothing runs when the roots do not.
    for name in jobs:
        assert name in roots or ancestors(jobs, name) & set(roots), name


def test_cd_deploys_with_oidc_into_a_github_environment(cd: dict[str, Any]) -> None:
    deploy = cd["jobs"][job_running(cd["jobs"], "aws-actions/configure-aws-credentials")]
    aws = next(s for s in steps(deploy) if "configure-aws-credentials" in s.get("uses", ""))
    assert "role-to-assume" in aws["with"]
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(aws["with"])
    assert deploy["environment"]["name"]
    text = job_text(deploy)
    assert "playbooks/site.yml" in text and "app_deploy_image=" in text
    assert "playbooks/smoke.yml" in text


def test_cd_rolls_back_on_failure_and_stays_failed(cd: dict[str, Any]) -> None:
    deploy = cd["jobs"][job_running(cd["jobs"], "aws-actions/configure-aws-credentials")]
    all_steps = steps(deploy)
    names = [s.get("name", "") for s in all_steps]

    def index(found: Callable[[dict[str, Any]], bool]) -> int:
        return next(i for i, s in enumerate(all_steps) if found(s))

    record = index(lambda s: "get deployment webapp" in s.get("run", ""))
    new = index(lambda s: "app_deploy_image=$NEW_IMAGE" in s.get("run", ""))
    verify = index(lambda s: "$PREVIOUS_IMAGE" in s.get("run", "") and "cosign verify" in s["run"])
    checkout = index(lambda s: s.get("with", {}).get("path") == "previous-release")
    rollback = index(lambda s: "app_deploy_image=$PREVIOUS_IMAGE" in s.get("run", ""))
    assert record < new < verify < checkout < rollback, names

    # What ran before is read with the commit that deployed it, and both are checked.
    assert "source-revision" in all_steps[record]["run"]
    assert "app_deploy_source_revision=$NEW_REVISION" in all_steps[new]["run"]
    assert all_steps[verify]["env"]["IDENTITY"].endswith(
        "/.github/workflows/ci.yml@refs/heads/main"
    )
    assert all_steps[checkout]["with"]["ref"] == "${{ steps.previous.outputs.revision }}"
    step = all_steps[rollback]
    assert "cd previous-release" in step["run"] and "--tags deploy" in step["run"]
    assert "exit 0" not in step["run"] and not step.get("continue-on-error")

    # Only a rollback image CI signed is deployed, and only with its own commit's playbooks
    # and manifests once that commit is checked out and found on main.
    on_main = next(s for s in all_steps if s.get("id") == "previous-on-main")
    assert checkout < all_steps.index(on_main) < rollback
    assert all_steps[checkout]["with"]["fetch-depth"] == 0

    def rollback_runs(status: str, verified: str, revision: str, found_on_main: str) -> bool:
        context = {
            "status": status,
            "steps": {
                "previous": {
                    "outputs": {
                        "image": "ghcr.io/o/webapp@sha256:" + "a" * 64,
                        "revision": revision,
                    }
                },
                all_steps[verify]["id"]: {"outcome": verified},
                all_steps[checkout]["id"]: {"outcome": "success" if revision else "skipped"},
                "previous-on-main": {"outcome": found_on_main},
            },
        }
        assert evaluate(all_steps[checkout]["if"], context) is (
            status == "failure" and verified == "success" and revision != ""
        )
        return evaluate(step["if"], context)

    sha = "b" * 40
    assert rollback_runs("failure", "success", sha, "success")
    assert rollback_runs("failure", "success", "", "skipped")
    assert not rollback_runs("failure", "success", sha, "failure")
    assert not rollback_runs("failure", "failure", sha, "skipped")
    assert not rollback_runs("success", "skipped", sha, "skipped")
    verify_run = all_steps[verify]["run"]
    assert "cosign verify " in verify_run and "cosign verify-attestation" in verify_run


def test_cd_rolls_back_only_to_a_commit_on_main(cd: dict[str, Any], tmp_path: Path) -> None:
    """The recorded commit comes from the cluster; a commit from a branch or a fork is refused.
    Real git, with the clone actions/checkout makes (fetch-depth 0: origin/* for every branch)."""
    deploy = cd["jobs"][job_running(cd["jobs"], "aws-actions/configure-aws-credentials")]
    step = next(s for s in steps(deploy) if s.get("id") == "previous-on-main")

    def git(*args: str, cwd: Path = tmp_path / "origin") -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.org",
        }
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        )
        return result.stdout.strip()

    (tmp_path / "origin").mkdir()
    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "released")
    released = git("rev-parse", "HEAD")
    git("commit", "-q", "--allow-empty", "-m", "later")
    git("switch", "-q", "-c", "unreviewed", released)
    git("commit", "-q", "--allow-empty", "-m", "unreviewed")
    unreviewed = git("rev-parse", "HEAD")
    git("switch", "-q", "main")
    git(
        "clone",
        "-q",
        str(tmp_path / "origin"),
        str(tmp_path / step["working-directory"]),
        cwd=tmp_path,
    )

    for commit, allowed in ((released, True), (unreviewed, False)):
        workdir = tmp_path / step["working-directory"]
        git("checkout", "-q", "--detach", commit, cwd=workdir)
        result = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=workdir, capture_output=True, text=True
        )
        assert (result.returncode == 0) is allowed, (commit, result.stdout, result.stderr)
        if not allowed:
            assert "not on main" in result.stdout


def test_every_secret_and_variable_is_documented(workflows: dict[str, Any]) -> None:
    doc = (ROOT / "docs" / "ci-cd.md").read_text()
    names = set()
    for name in workflows:
        text = (WORKFLOWS / name).read_text()
        names |= set(re.findall(r"\b(?:secrets|vars)\.([A-Z][A-Z0-9_]+)", text))
    names.discard("GITHUB_TOKEN")
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/ci-cd.md does not document {missing}"


def test_e2e_runs_the_stages_in_order_on_the_runner(workflows: dict[str, Any]) -> None:
    (job,) = workflows["e2e.yml"]["jobs"].values()
    runs = [str(s.get("run", "")) for s in steps(job)]

    def index(marker: str) -> int:
        return next(i for i, run in enumerate(runs) if marker in run)

    order = [
        "playbooks/k3s.yml",
        "images import",
        "playbooks/deploy.yml",
        "playbooks/monitoring.yml",
        "rollout status",
        "playbooks/smoke.yml",
        "scripts/check-k3s-cis.sh",
    ]
    positions = [index(marker) for marker in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    assert all("-i inventories/e2e" in runs[i] for i in positions if "playbooks/" in runs[i])


def test_e2e_inventory_targets_the_runner_itself() -> None:
    result = subprocess.run(
        ["ansible-inventory", "-i", str(ROOT / "inventories" / "e2e"), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    inventory = json.loads(result.stdout)
    assert inventory["k3s_server"]["hosts"] == ["localhost"]
    assert not inventory.get("k3s_agent", {}).get("hosts")
    host = inventory["_meta"]["hostvars"]["localhost"]
    assert host["ansible_connection"] == "local"
    assert host["app_deploy_image_pull_policy"] == "IfNotPresent"


def test_e2e_deploys_the_image_by_the_digest_it_imported(workflows: dict[str, Any]) -> None:
    (job,) = workflows["e2e.yml"]["jobs"].values()
    deploy = next(s for s in steps(job) if "playbooks/deploy.yml" in str(s.get("run", "")))
    source = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.image \}\}", deploy["env"]["IMAGE"])
    assert source, deploy["env"]["IMAGE"]
    imported = next(s for s in steps(job) if s.get("id") == source.group(1))["run"]
    assert "images import" in imported and "images tag" in imported, imported
    assert "image=${IMAGE%:*}@$digest" in imported, imported
