"""containers.podman.podman with pipelining, for the Molecule scenarios' test hosts.

Without pipelining every task costs six `podman` runs per host (mount, home lookup,
mkdir, chmod, the module, rm), about 0.17 s of CPU each here; with it, two (mount, the
module on stdin). The collection stopped offering pipelining in 2021
(containers/ansible-podman-collections#275) after podman 1.x's `exec -i` had cut long
input short (ansible/ansible#67004, containers/podman#5046); podman 4, here and on the
CI runners, passes stdin whole (a 3 MB module payload arrives intact).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

# Ansible reads a plugin's options from this literal in its own file: the parent's options
# are repeated here, with `pipelining` added.
DOCUMENTATION = """
name: podman_pipelined
short_description: Run tasks in a podman container, modules piped to stdin
description:
  - containers.podman.podman with pipelining; the same options, and C(pipelining).
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
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments to the podman command line.
    default: ''
    ini:
      - section: defaults
        key: podman_extra_args
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_executable:
    description: The podman executable.
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
  pipelining:
    description:
      - Pipe modules to the container's Python. Ansible still falls back to files for
        async tasks and for become methods that cannot pipeline.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
"""


class Connection(PodmanConnection):
    transport = "podman_pipelined"
    has_pipelining = True

    def _podman(
        self,
        cmd: str | list[str],
        cmd_args: list[Any] | None = None,
        in_data: bytes | None = None,
        use_container_id: bool = True,
    ) -> tuple[int, bytes, bytes]:
        if in_data is not None and isinstance(cmd, list) and cmd[:1] == ["exec"]:
            cmd = ["exec", "-i", *cmd[1:]]  # without -i podman gives the command no stdin
        return super()._podman(cmd, cmd_args, in_data, use_container_id)
