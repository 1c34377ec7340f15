"""The collection's dns_label and dns_name tests, through Ansible's templating as roles use them."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.ansible import ROOT

VALUES = {
    "webapp": (True, False),
    "lab-acme": (True, False),
    "a" * 63: (True, False),
    "a" * 64: (False, False),
    "webapp.example.com": (False, True),
    "xn--bcher-kva.example": (False, True),
    "Webapp": (False, False),
    "-webapp": (False, False),
    "webapp-": (False, False),
    "lets_encrypt": (False, False),
    "webapp..example.com": (False, False),
    "webapp.example.com.": (False, False),
    ".".join(["a" * 63] * 4): (False, False),  # 255 characters
    "": (False, False),
}


@pytest.fixture(scope="module")
def verdicts() -> dict[str, list[bool]]:
    """Each value's [dns_label, dns_name], from one ad hoc Ansible run."""
    script = (
        "{% set out = {} %}{% for v in values %}{% set _ = out.update({v: "
        "[v is devsecops.k3s_ec2.dns_label, v is devsecops.k3s_ec2.dns_name]}) %}"
        "{% endfor %}{{ out | to_json }}"
    )
    result = subprocess.run(
        [
            "ansible",
            "localhost",
            "-i",
            "inventories/local/hosts.yml",
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={script}",
            "-e",
            json.dumps({"values": list(VALUES)}),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(json.loads(result.stdout.split("=>", 1)[1])["msg"])


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:40] for v in VALUES])
def test_names_are_told_apart(verdicts: dict[str, list[bool]], value: str) -> None:
    assert tuple(verdicts[value]) == VALUES[value]
