"""Variables of an inventory as the roles see them: inventory values, role defaults and
role vars, templated by Ansible itself.

A throwaway playbook imports every role of the collection without running it (an
imported role's defaults and vars are visible to the play's later tasks) and writes the
requested names as JSON. The inventory's `hosts.yml` is used without its aws_ec2 source,
so nothing reaches AWS.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.support.ansible import ROLES, ROOT, ansible_env

ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists())
# The environment CD and the e2e workflow give the dev/prod and e2e inventories.
WORKFLOW_ENV = {"K3S_EC2_ADMIN_CIDRS": "198.51.100.0/24,203.0.113.7/32", "E2E_DB_HOST": "10.1.0.4"}
# What the provision stage publishes, which some derived values read.
PUBLISHED = {"ec2_node_server_eip": "203.0.113.10"}

UNDEFINED = "<undefined>"
PLAY = """
- name: Resolve variables as the roles see them
  hosts: localhost
  gather_facts: false
  tasks:
{imports}
    - name: Write the requested variables
      ansible.builtin.copy:
        dest: {report}
        content: "{{{{ dict(names | zip(values)) | to_json }}}}"
        mode: "0600"
      vars:
        names: {names}
        values: "{{{{ query('ansible.builtin.vars', *names, default='{undefined}') }}}}"
"""
IMPORT = """    - name: Import {role} without running it
      ansible.builtin.import_role:
        name: devsecops.k3s_ec2.{role}
      when: false
"""


def resolve(
    inventory: str,
    names: Iterable[str],
    extra_vars: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values of `names` for inventories/<inventory>; None for a name that is not defined."""
    names = list(names)
    with tempfile.TemporaryDirectory(prefix=f"resolve-{inventory}-") as work:
        report = Path(work) / "vars.json"
        playbook = ROOT / "playbooks" / f".resolve-{inventory}-{Path(work).name}.yml"
        imports = "".join(IMPORT.format(role=role) for role in ROLE_NAMES)
        playbook.write_text(
            PLAY.format(
                imports=imports, report=report, names=json.dumps(names), undefined=UNDEFINED
            )
        )
        try:
            result = subprocess.run(
                [
                    "ansible-playbook",
                    "-i",
                    str(ROOT / "inventories" / inventory / "hosts.yml"),
                    str(playbook),
                    "-e",
                    json.dumps({**PUBLISHED, **(extra_vars or {})}),
                ],
                cwd=ROOT,
                env={**ansible_env(), **WORKFLOW_ENV, **(env or {})},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        finally:
            playbook.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"resolving {inventory} failed:\n{result.stdout}\n{result.stderr}")
        values = json.loads(report.read_text())
    return {name: None if value == UNDEFINED else value for name, value in values.items()}
