"""Filters that check address ranges against each other: overlaps and coverage."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: cidr_overlaps
short_description: Name every pair of address ranges that overlap
description:
  - Takes a mapping of name to CIDR (or list of CIDRs) and returns one message per
    overlapping pair of ranges with different names, for example
    C(vpc 10.42.0.0/16 overlaps cluster 10.42.0.0/16). An empty list means no overlap.
  - Empty strings and empty lists are ignored (a range that does not apply).
options:
  _input:
    description: Names mapped to a CIDR or a list of CIDRs.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse a VPC that overlaps the pod range
  ansible.builtin.assert:
    that: ranges | devsecops.k3s_ec2.cidr_overlaps | length == 0
  vars:
    ranges: {vpc: 10.42.0.0/16, cluster: 10.42.0.0/16}
"""

RETURN = r"""
_value:
  description: One message per overlapping pair.
  type: list
  elements: str
"""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any, name: str) -> Network:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as err:
        raise AnsibleFilterError(
            f"{name}: {value!r} is not a network in CIDR form ({err})"
        ) from err


def _networks(value: Any, name: str) -> list[Network]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [_network(value, name)]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return [_network(item, name) for item in value if item not in (None, "")]
    raise AnsibleFilterError(f"{name}: expected a CIDR or a list of CIDRs, got {value!r}")


def cidr_overlaps(ranges: Mapping[str, Any]) -> list[str]:
    """Return a message for each pair of differently named ranges that overlap."""
    if not isinstance(ranges, Mapping):
        raise AnsibleFilterError(
            f"cidr_overlaps expects a mapping of name to CIDRs, got {ranges!r}"
        )
    named = [(name, net) for name, value in ranges.items() for net in _networks(value, name)]
    return [
        f"{name_a} {net_a} overlaps {name_b} {net_b}"
        for index, (name_a, net_a) in enumerate(named)
        for name_b, net_b in named[index + 1 :]
        if name_a != name_b and net_a.version == net_b.version and net_a.overlaps(net_b)
    ]


def cidrs_outside(inner: Any, outer: Any) -> list[str]:
    """Return the CIDRs of ``inner`` that no CIDR of ``outer`` contains."""
    outer_nets = _networks(outer, "outer")
    return [
        str(net)
        for net in _networks(inner, "inner")
        if not any(net.version == o.version and net.subnet_of(o) for o in outer_nets)
    ]


class FilterModule:
    """Address range checks."""

    def filters(self) -> dict[str, Any]:
        return {"cidr_overlaps": cidr_overlaps, "cidrs_outside": cidrs_outside}
