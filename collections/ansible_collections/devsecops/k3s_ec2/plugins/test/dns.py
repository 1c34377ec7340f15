"""Tests for the names Kubernetes and DNS accept: one definition for every role."""

from __future__ import annotations

import re
from typing import Any

DOCUMENTATION = r"""
name: dns_label
short_description: Is the value a DNS label (RFC 1123), as Kubernetes names namespaces
description:
  - True for lower-case letters, digits and dashes, starting and ending with a letter or a digit,
    at most 63 characters, such as C(webapp) or C(lab-acme). Also the form of a Traefik
    certificate resolver's name here.
  - The sibling test C(dns_name) is true for a fully qualified host name such as
    C(webapp.example.com) (two or more such labels joined by dots, at most 253 characters), the
    form an Ingress host and its certificate need.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the namespace and the Ingress host
  ansible.builtin.assert:
    that:
      - namespace is devsecops.k3s_ec2.dns_label
      - host is devsecops.k3s_ec2.dns_name
"""

RETURN = r"""
_value:
  description: Whether the value has the form.
  type: bool
"""

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_LABEL_RE = re.compile(rf"{_LABEL}\Z")
_NAME_RE = re.compile(rf"{_LABEL}(\.{_LABEL})+\Z")


def dns_label(value: Any) -> bool:
    """A DNS label: what Kubernetes accepts as a namespace's name."""
    return isinstance(value, str) and _LABEL_RE.match(value) is not None


def dns_name(value: Any) -> bool:
    """A fully qualified host name of DNS labels."""
    return isinstance(value, str) and len(value) <= 253 and _NAME_RE.match(value) is not None


class TestModule:
    """Name checks."""

    def tests(self) -> dict[str, Any]:
        return {"dns_label": dns_label, "dns_name": dns_name}
