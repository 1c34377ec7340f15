"""containers.podman.podman with pipelining, for the Molecule scenarios' test hosts.

Without pipelining every task costs six `podman` runs per host (mount, home lookup,
mkdir, chmod, the module, rm), about 0.17 s of CPU each here; with it, two (mount, the
module on stdin). The collection turned pipelining off in 2021 for podman 1.x, whose
`exec -i` cut long input short; the podman here passes stdin whole.
"""

from __future__ import annotations

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = """
name: podman_pipelined
short_description: Run tasks in a podman container, modules piped to stdin
description:
  - containers.podman.podman with pipelining on; the same options.
options:
  remote_addr:
    description: The container's name or ID.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: The user to run commands as in the container.
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments to the podman command line.
    default: ''
    vars:
      - name: ansible_podman_extra_args
  podman_executable:
    description: The podman executable.
    default: podman
    vars:
      - name: ansible_podman_executable
"""


class Connection(PodmanConnection):
    transport = "podman_pipelined"
    has_pipelining = True
    always_pipeline_modules = True

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        if in_data is None:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if not self._connected:
            self._connect()
        # `exec -i`: without it podman gives the command no stdin.
        args = ["exec", "-i", *(["--user", self.user] if self.user else [])]
        return self._podman(args, shlex.split(to_native(cmd)), in_data)
