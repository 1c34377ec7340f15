"""Filters that build the k3s configuration file and the external datastore endpoint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: k3s_config_merge
short_description: Merge k3s config.yaml settings over hardened defaults
description:
  - Returns a new mapping; neither input is modified.
  - Keys ending in C(-arg) (C(kube-apiserver-arg), C(kubelet-arg), ...) are lists of
    C(flag=value) strings merged flag by flag, so a user value replaces the default for the
    same flag and keeps every other hardened flag.
  - Every other key of the override replaces the default; a C(null) value removes the key.
options:
  _input:
    description: The hardened defaults.
    type: dict
    required: true
  override:
    description: The user's settings.
    type: dict
    required: true
"""


class K3sConfigError(AnsibleFilterError):
    """Raised for settings that cannot be merged; the message names the key."""


def _flag_name(item: Any, key: str) -> str:
    if not isinstance(item, str) or not item.strip().removeprefix("--"):
        raise K3sConfigError(f"{key}: every entry must be a 'flag=value' string, got {item!r}")
    return item.split("=", 1)[0].strip().removeprefix("--")


def _as_arg_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return list(value)
    raise K3sConfigError(f"{key}: expected a list of 'flag=value' strings, got {value!r}")


def merge_args(default: Any, override: Any, key: str = "args") -> list[str]:
    """Merge two lists of ``flag=value`` strings: override wins per flag, order is kept."""
    merged: dict[str, str] = {}
    for item in _as_arg_list(default, key) + _as_arg_list(override, key):
        name = _flag_name(item, key)
        merged[name] = item.strip().removeprefix("--")
    return list(merged.values())


def k3s_config_merge(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the user's k3s settings over the hardened defaults."""
    for name, value in (("defaults", defaults), ("override", override)):
        if not isinstance(value, Mapping):
            raise K3sConfigError(f"k3s_config_merge: {name} must be a mapping, got {value!r}")
    result: dict[str, Any] = dict(defaults)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif key.endswith("-arg"):
            result[key] = merge_args(result.get(key), value, key)
        else:
            result[key] = value
    return result


# `k3s server` options an agent does not accept: dropped from an agent's config so one
# k3s_config serves both roles.
SERVER_ONLY_KEYS = frozenset(
    {
        "advertise-address",
        "advertise-port",
        "agent-token",
        "agent-token-file",
        "bind-address",
        "cluster-cidr",
        "cluster-dns",
        "cluster-domain",
        "cluster-init",
        "cluster-reset",
        "cluster-reset-restore-path",
        "datastore-cafile",
        "datastore-certfile",
        "datastore-endpoint",
        "datastore-keyfile",
        "default-local-storage-path",
        "disable",
        "disable-cloud-controller",
        "disable-helm-controller",
        "disable-kube-proxy",
        "disable-network-policy",
        "disable-scheduler",
        "egress-selector-mode",
        "embedded-registry",
        "enable-pprof",
        "flannel-backend",
        "flannel-external-ip",
        "flannel-ipv6-masq",
        "helm-job-image",
        "https-listen-port",
        "kine-tls",
        "kube-apiserver-arg",
        "kube-cloud-controller-manager-arg",
        "kube-controller-manager-arg",
        "kube-scheduler-arg",
        "secrets-encryption",
        "secrets-encryption-provider",
        "service-cidr",
        "service-node-port-range",
        "servicelb-namespace",
        "supervisor-metrics",
        "tls-san",
        "tls-san-security",
        "write-kubeconfig",
        "write-kubeconfig-group",
        "write-kubeconfig-mode",
    }
)


def k3s_agent_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the settings only `k3s server` accepts (and every etcd-* one)."""
    if not isinstance(config, Mapping):
        raise K3sConfigError(f"k3s_agent_config: expected a mapping, got {config!r}")
    return {
        k: v for k, v in config.items() if k not in SERVER_ONLY_KEYS and not k.startswith("etcd-")
    }


def k3s_datastore_endpoint(
    secret: Mapping[str, Any],
    host: str = "",
    port: int | str = "",
    dbname: str = "",
    sslmode: str = "require",
    rootcert: str = "",
) -> str:
    """Build a PostgreSQL ``datastore-endpoint`` from a Secrets Manager secret.

    ``host``/``port``/``dbname`` (the RDS stage's facts) take precedence over the secret's
    own fields; user name and password are percent-encoded so any character is safe.
    ``rootcert``: the CA bundle file on the server that verify-ca/verify-full check against.
    """
    if not isinstance(secret, Mapping):
        raise K3sConfigError("k3s_datastore_endpoint: the secret must be a JSON object")
    missing = [f for f in ("username", "password") if not secret.get(f)]
    host = str(host or secret.get("host") or "")
    port = str(port or secret.get("port") or "5432")
    dbname = str(dbname or secret.get("dbname") or "")
    if not host:
        missing.append("host")
    if not dbname:
        missing.append("dbname")
    if missing:
        raise K3sConfigError(
            "k3s_datastore_endpoint: missing " + ", ".join(missing) + " (RDS facts or secret)"
        )
    if not port.isdigit():
        raise K3sConfigError(f"k3s_datastore_endpoint: port must be a number, got {port!r}")
    user = quote(str(secret["username"]), safe="")
    password = quote(str(secret["password"]), safe="")
    return (
        f"postgres://{user}:{password}@{host}:{port}/{quote(dbname, safe='')}"
        f"?sslmode={quote(sslmode, safe='')}"
        + (f"&sslrootcert={quote(rootcert, safe='/')}" if rootcert else "")
    )


def k3s_checksum_from_file(content: str, filename: str) -> str:
    """Return the sha256 for ``filename`` from a ``sha256sum`` style file, or ''."""
    for line in str(content).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*").removeprefix("./") == filename:
            return parts[0].lower()
    return ""


class FilterModule:
    """devsecops.k3s_ec2 k3s filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "k3s_config_merge": k3s_config_merge,
            "k3s_agent_config": k3s_agent_config,
            "k3s_datastore_endpoint": k3s_datastore_endpoint,
            "k3s_checksum_from_file": k3s_checksum_from_file,
        }
