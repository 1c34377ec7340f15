"""The filters that compare address ranges."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.devsecops.k3s_ec2.plugins.filter.cidr import cidr_overlaps, cidrs_outside


def test_overlaps_names_each_overlapping_pair() -> None:
    ranges = {"vpc": "10.42.0.0/16", "cluster": "10.42.0.0/16", "service": "10.43.0.0/16"}
    assert cidr_overlaps(ranges) == ["vpc 10.42.0.0/16 overlaps cluster 10.42.0.0/16"]


def test_overlaps_sees_a_subnet_inside_a_range_of_a_list() -> None:
    ranges = {"db": ["10.20.10.0/24", "10.43.7.0/24"], "service": "10.43.0.0/16"}
    assert cidr_overlaps(ranges) == ["db 10.43.7.0/24 overlaps service 10.43.0.0/16"]


def test_overlaps_ignores_ranges_of_the_same_name_and_empty_ones() -> None:
    ranges = {"db": ["10.20.0.0/16", "10.20.10.0/24"], "vpc": "", "cluster": []}
    assert cidr_overlaps(ranges) == []


def test_overlaps_rejects_a_range_with_host_bits() -> None:
    with pytest.raises(AnsibleFilterError, match=r"vpc: '10\.20\.0\.1/16' is not a network"):
        cidr_overlaps({"vpc": "10.20.0.1/16"})


def test_outside_returns_what_no_outer_range_contains() -> None:
    assert cidrs_outside(["10.20.10.0/24", "10.20.11.0/24"], ["10.0.0.0/16"]) == [
        "10.20.10.0/24",
        "10.20.11.0/24",
    ]
    assert cidrs_outside(["10.20.10.0/24"], ["10.20.0.0/16"]) == []
    assert cidrs_outside("10.20.10.0/24", ["10.20.11.0/24", "10.20.10.0/23"]) == []
