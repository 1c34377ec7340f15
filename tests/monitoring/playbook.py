"""Run the monitoring stage playbook (tests/monitoring/site.yml) as a user would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.monitoring.sources import MONITORING, ROOT

PLAYBOOK = Path(__file__).with_name("site.yml")
PASSWORD = "correct-horse-battery-staple"
# The stage playbooks check an inventory's contract first: the lab's stands in.
CONTRACT = ROOT / "inventories" / "local" / "group_vars" / "all" / "contract.yml"


def play(
    tmp_path: Path, kubeconfig: Path, **extra: Any
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the stage; returns the result and the file the published Grafana URL lands in."""
    report = tmp_path / "grafana_url"
    extra_vars = {
        "monitoring_kubeconfig": str(kubeconfig),
        "monitoring_source_dir": str(MONITORING),
        "report_file": str(report),
        **extra,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "GRAFANA_ADMIN_PASSWORD": PASSWORD,
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(PLAYBOOK), "-e", f"@{CONTRACT}",
         "-e", json.dumps(extra_vars)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return result, report
