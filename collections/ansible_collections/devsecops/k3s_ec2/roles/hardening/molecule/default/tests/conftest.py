"""Fixtures for the hardening scenario: a key-holding client inside each host."""

from __future__ import annotations

import pytest

KEY = "/root/hardening-test/id_ed25519"


@pytest.fixture(scope="module")
def ssh_client(host):
    """Give root a key pair and install its public half for operator1, root and outsider.

    operator1 is in the sudo group (allowed by AllowGroups); outsider is not; root
    holds a valid key but PermitRootLogin forbids it.
    """
    host.run_expect([0], "mkdir -p -m 0700 /root/hardening-test")
    host.run_expect([0], f"test -f {KEY} || ssh-keygen -q -t ed25519 -N '' -f {KEY}")
    host.run_expect([0], "id outsider || useradd -m -s /bin/bash outsider")
    homes = {"operator1": "/home/operator1", "outsider": "/home/outsider", "root": "/root"}
    for user, home in homes.items():
        host.run_expect(
            [0],
            f"install -d -m 0700 -o {user} -g {user} {home}/.ssh && "
            f"install -m 0600 -o {user} -g {user} {KEY}.pub {home}/.ssh/authorized_keys",
        )

    def ssh(user: str, *options: str, command: str = "true"):
        opts = " ".join(
            [
                "-o BatchMode=yes",
                "-o StrictHostKeyChecking=no",
                "-o UserKnownHostsFile=/dev/null",
                "-o ConnectTimeout=10",
                f"-i {KEY}",
                *options,
            ]
        )
        return host.run(f"ssh {opts} {user}@127.0.0.1 {command}")

    return ssh
