"""scripts/check-k3s-cis.sh against stand-ins for k3s, journalctl and systemctl.

The real run is the e2e workflow's, on a runner with a real k3s; here each check is shown
to pass on a hardened node and to fail, naming the check, when one setting is missing.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.k3s.conftest import ROOT

SCRIPT = ROOT / "scripts/check-k3s-cis.sh"

APISERVER = (
    "--advertise-port=6443 --anonymous-auth=false --profiling=false"
    " --enable-admission-plugins=NodeRestriction,EventRateLimit"
    " --admission-control-config-file={cfg}/psa.yaml --audit-policy-file={cfg}/audit-policy.yaml"
    " --audit-log-path={audit} --audit-log-maxage=30 --audit-log-maxbackup=10"
    " --audit-log-maxsize=100 --encryption-provider-config=/var/lib/rancher/k3s/server/cred/"
    "encryption-config.json --service-account-lookup=true"
)
CONTROLLER = (
    "--terminated-pod-gc-threshold=10 --use-service-account-credentials=true --profiling=false"
)
KUBELET = (
    "--protect-kernel-defaults=true --streaming-connection-idle-timeout=5m"
    " --make-iptables-util-chains=true --event-qps=0 --read-only-port=0"
)

K3S_STUB = """#!/bin/bash
case "$*" in
  *"get nodes"*) echo -n "${STUB_READY:-True}" ;;
  *" run "*) echo 'Error from server (Forbidden): pods "cis-psa-probe" is forbidden:' \
       "${STUB_PSA:-violates PodSecurity \\"restricted:latest\\": privileged}"; exit 1 ;;
  "secrets-encrypt status") echo "Encryption Status: ${STUB_ENCRYPTION:-Enabled}" ;;
  *) exit 2 ;;
esac
"""
JOURNALCTL_STUB = '#!/bin/bash\ncat "$STUB_JOURNAL"\n'
SYSTEMCTL_STUB = """#!/bin/bash
case "$*" in
  *MainPID*) echo 0 ;;
  *ExecStart*) echo "{ argv[]=k3s server --config config.yaml ${STUB_EXTRA_ARG:-} }" ;;
esac
"""


def write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    """A hardened node's view: stand-in commands, a k3s journal, private config files."""
    bin_dir, cfg = tmp_path / "bin", tmp_path / "etc"
    bin_dir.mkdir()
    cfg.mkdir()
    write_exec(bin_dir / "k3s", K3S_STUB)
    write_exec(bin_dir / "journalctl", JOURNALCTL_STUB)
    write_exec(bin_dir / "systemctl", SYSTEMCTL_STUB)
    audit = tmp_path / "audit.log"
    audit.write_text('{"kind":"Event"}\n')
    for name in (
        "config.yaml",
        "cluster-token",
        "agent-token",
        "k3s.yaml",
        "psa.yaml",
        "audit-policy.yaml",
    ):
        (cfg / name).write_text("x\n")
        (cfg / name).chmod(stat.S_IRUSR | stat.S_IWUSR)
    lines = [
        f"Running kube-apiserver {APISERVER.format(cfg=cfg, audit=audit)}",
        f"Running kube-controller-manager {CONTROLLER}",
        f"Running kubelet {KUBELET}",
    ]
    (tmp_path / "journal").write_text("\n".join(lines) + "\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "K3S_BIN": str(bin_dir / "k3s"),
        "K3S_CONFIG_DIR": str(cfg),
        "K3S_CHECK_INTERVAL": "0.1",
        "STUB_JOURNAL": str(tmp_path / "journal"),
    }


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hardened_node_passes(node: dict[str, str]) -> None:
    result = check(node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "all checks passed" in result.stdout


def test_missing_kubelet_flag_is_named(node: dict[str, str]) -> None:
    journal = Path(node["STUB_JOURNAL"])
    journal.write_text(journal.read_text().replace(" --protect-kernel-defaults=true", ""))
    result = check(node)
    assert result.returncode == 1
    assert "FAIL  kubelet --protect-kernel-defaults=true" in result.stdout


@pytest.mark.parametrize(
    ("stub", "value", "failed_check"),
    [
        ("STUB_ENCRYPTION", "Disabled", "secrets-encrypt status: Enabled"),
        (
            "STUB_PSA",
            "created (server dry run)",
            "Pod Security restricted refuses a privileged pod",
        ),
        ("STUB_EXTRA_ARG", "--token abc", "no token on the k3s command line"),
    ],
)
def test_each_runtime_check_can_fail(
    node: dict[str, str], stub: str, value: str, failed_check: str
) -> None:
    result = check({**node, stub: value})
    assert result.returncode == 1
    assert f"FAIL  {failed_check}" in result.stdout


def test_world_readable_config_fails(node: dict[str, str]) -> None:
    (Path(node["K3S_CONFIG_DIR"]) / "config.yaml").chmod(0o644)
    result = check(node)
    assert result.returncode == 1
    assert "config.yaml mode 0600 root (is: 644" in result.stdout


def test_node_not_ready_fails_after_the_timeout(node: dict[str, str]) -> None:
    result = check({**node, "STUB_READY": "False"}, "--timeout", "1")
    assert result.returncode == 1
    assert "FAIL  all nodes Ready within 1s" in result.stdout
