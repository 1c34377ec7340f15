"""The filters that build /etc/rancher/k3s/config.yaml and the datastore endpoint."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from ansible_collections.devsecops.k3s_ec2.plugins.filter.k3s_config import (
    FilterModule,
    K3sConfigError,
    k3s_agent_config,
    k3s_checksum_from_file,
    k3s_config_merge,
    k3s_datastore_endpoint,
    merge_args,
)

HARDENED = {
    "protect-kernel-defaults": True,
    "secrets-encryption": True,
    "write-kubeconfig-mode": "0600",
    "disable": ["traefik", "servicelb"],
    "kube-apiserver-arg": [
        "audit-log-maxage=30",
        "audit-log-maxsize=100",
        "enable-admission-plugins=NodeRestriction,EventRateLimit",
    ],
    "kubelet-arg": ["streaming-connection-idle-timeout=5m", "event-qps=0"],
}


def test_user_flag_replaces_only_the_same_flag() -> None:
    merged = k3s_config_merge(HARDENED, {"kube-apiserver-arg": ["audit-log-maxage=90"]})
    assert merged["kube-apiserver-arg"] == [
        "audit-log-maxage=90",
        "audit-log-maxsize=100",
        "enable-admission-plugins=NodeRestriction,EventRateLimit",
    ]


def test_new_flags_are_appended_after_the_hardened_ones() -> None:
    merged = k3s_config_merge(HARDENED, {"kubelet-arg": ["max-pods=50"]})
    assert merged["kubelet-arg"] == [
        "streaming-connection-idle-timeout=5m",
        "event-qps=0",
        "max-pods=50",
    ]


def test_arg_key_absent_from_defaults_is_taken_as_is() -> None:
    merged = k3s_config_merge(HARDENED, {"kube-scheduler-arg": "bind-address=127.0.0.1"})
    assert merged["kube-scheduler-arg"] == ["bind-address=127.0.0.1"]


def test_leading_dashes_do_not_create_a_duplicate_flag() -> None:
    assert merge_args(["event-qps=0"], ["--event-qps=5"]) == ["event-qps=5"]


def test_plain_keys_and_lists_are_replaced() -> None:
    merged = k3s_config_merge(HARDENED, {"disable": ["traefik"], "node-label": ["tier=a"]})
    assert merged["disable"] == ["traefik"]
    assert merged["node-label"] == ["tier=a"]
    assert merged["secrets-encryption"] is True


def test_null_removes_a_default_key() -> None:
    merged = k3s_config_merge(HARDENED, {"disable": None})
    assert "disable" not in merged


def test_inputs_are_not_modified() -> None:
    override = {"kubelet-arg": ["event-qps=5"]}
    before = repr(HARDENED)
    k3s_config_merge(HARDENED, override)
    assert repr(HARDENED) == before
    assert override == {"kubelet-arg": ["event-qps=5"]}


@pytest.mark.parametrize(
    ("defaults", "override", "message"),
    [
        ({}, ["not", "a", "dict"], "override must be a mapping"),
        ("x", {}, "defaults must be a mapping"),
        ({}, {"kubelet-arg": [""]}, "kubelet-arg: every entry"),
        ({}, {"kubelet-arg": [5]}, "kubelet-arg: every entry"),
        ({}, {"kubelet-arg": {"a": "b"}}, "kubelet-arg: expected a list"),
    ],
)
def test_bad_input_names_the_problem(defaults: object, override: object, message: str) -> None:
    with pytest.raises(K3sConfigError, match=message):
        k3s_config_merge(defaults, override)  # type: ignore[arg-type]


SECRET = {"username": "k3s", "password": "p@ss:w/rd?#", "host": "ignored", "port": 5432}


def test_endpoint_prefers_rds_facts_and_encodes_the_password() -> None:
    url = k3s_datastore_endpoint(SECRET, "db.example.internal", 6543, "k3s")
    parts = urlsplit(url)
    assert parts.scheme == "postgres"
    assert parts.hostname == "db.example.internal"
    assert parts.port == 6543
    assert parts.path == "/k3s"
    assert unquote(parts.password or "") == "p@ss:w/rd?#"
    assert parts.query == "sslmode=require"


def test_endpoint_falls_back_to_the_secret_fields() -> None:
    secret = {**SECRET, "host": "from-secret", "dbname": "appdb"}
    parts = urlsplit(k3s_datastore_endpoint(secret))
    assert (parts.hostname, parts.port, parts.path) == ("from-secret", 5432, "/appdb")


@pytest.mark.parametrize(
    ("secret", "kwargs", "message"),
    [
        ({"username": "u"}, {"host": "h", "dbname": "d"}, "missing password"),
        ({"username": "u", "password": "p"}, {"dbname": "d"}, "missing host"),
        ({"username": "u", "password": "p"}, {"host": "h", "port": "x", "dbname": "d"}, "port"),
        ("not-json", {}, "JSON object"),
    ],
)
def test_endpoint_rejects_incomplete_input(secret: object, kwargs: dict, message: str) -> None:
    with pytest.raises(K3sConfigError, match=message):
        k3s_datastore_endpoint(secret, **kwargs)  # type: ignore[arg-type]


CHECKSUMS = """\
0a1b  k3s-airgap-images-amd64.tar
{amd}  k3s
{arm}  k3s-arm64
"""


def test_checksum_file_lookup_matches_the_exact_asset_name() -> None:
    content = CHECKSUMS.format(amd="a" * 64, arm="B" * 64)
    assert k3s_checksum_from_file(content, "k3s") == "a" * 64
    assert k3s_checksum_from_file(content, "k3s-arm64") == "b" * 64
    assert k3s_checksum_from_file(content, "k3s-armhf") == ""


def test_filters_are_registered_under_their_names() -> None:
    assert set(FilterModule().filters()) == {
        "k3s_config_merge",
        "k3s_agent_config",
        "k3s_datastore_endpoint",
        "k3s_checksum_from_file",
    }


def test_agent_config_keeps_agent_settings_and_drops_server_ones() -> None:
    config = {
        **HARDENED,
        "token-file": "/etc/rancher/k3s/cluster-token",
        "server": "https://10.0.0.1:6443",
        "node-label": ["tier=a"],
        "tls-san": ["203.0.113.10"],
        "etcd-snapshot-retention": 5,
        "datastore-endpoint": "postgres://u:p@h:5432/d",
    }
    agent = k3s_agent_config(config)
    assert agent == {
        "protect-kernel-defaults": True,
        "kubelet-arg": ["streaming-connection-idle-timeout=5m", "event-qps=0"],
        "token-file": "/etc/rancher/k3s/cluster-token",
        "server": "https://10.0.0.1:6443",
        "node-label": ["tier=a"],
    }


def test_agent_config_rejects_a_non_mapping() -> None:
    with pytest.raises(K3sConfigError, match="expected a mapping"):
        k3s_agent_config(["kubelet-arg"])  # type: ignore[arg-type]
