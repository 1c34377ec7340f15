"""The app_deploy role refuses bad input before it talks to any cluster.

Every run points the role at a kubeconfig whose server is a closed loopback port and gives
it database settings, so a run that got past validation would fail on the connection in
the first Kubernetes task; the control run proves exactly that.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.render import TEST_IMAGE, ansible_env
from tests.support.ansible import run_controller_playbook
from tests.support.tlsca import TestCA

FIRST_CLUSTER_TASK = "Ensure the namespace, with its Pod Security and admission policy labels"
WRITER = "w" * 48
# PEM-shaped stand-ins: validation reads the shape only, and must never print the key.
CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIBcertificate\n-----END CERTIFICATE-----\n"
KEY = (
    "-----BEGIN PRIVATE KEY-----\n"  # pragma: allowlist secret
    "MIGHnever-printed-key-body\n-----END PRIVATE KEY-----\n"
)
TLS_PAIR_RULE = (
    "app_deploy_ingress_tls_certificate and app_deploy_ingress_tls_private_key go together, as PEM"
)

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "image-untagged": (
        {"app_deploy_image": "ghcr.io/devsecops/webapp"},
        "app_deploy_image 'ghcr.io/devsecops/webapp' must be ghcr.io/devsecops/<name> "
        "referenced by its sha256 digest",
    ),
    "image-tag-only": (
        {"app_deploy_image": "ghcr.io/devsecops/webapp:1.0.0"},
        "app_deploy_image 'ghcr.io/devsecops/webapp:1.0.0' must be ghcr.io/devsecops/<name> "
        "referenced by its sha256 digest",
    ),
    "image-other-registry": (
        {"app_deploy_image": "docker.io/devsecops/webapp@sha256:" + "5f" * 32},
        "app_deploy_image 'docker.io/devsecops/webapp@sha256:",
    ),
    "image-registry-port": (
        {"app_deploy_image": "ghcr.io:443/devsecops/webapp@sha256:" + "5f" * 32},
        "must be ghcr.io/devsecops/<name>",
    ),
    "image-missing": ({"app_deploy_image": None}, "missing required arguments: app_deploy_image"),
    "exposure-unknown": (
        {"app_deploy_exposure": "loadbalancer"},
        "value of app_deploy_exposure must be one of: nodeport, ingress, both, got: loadbalancer",
    ),
    "nodeport-out-of-range": (
        {"app_deploy_nodeport": 80},
        "app_deploy_nodeport must be within 30000-32767 (got 80)",
    ),
    "nodeport-not-a-number": (
        {"app_deploy_nodeport": "http"},
        "app_deploy_nodeport",
    ),
    "rate-limit-negative": (
        {"app_deploy_ingress_rate_average": -1},
        "a rate limit at least 0 requests a second with a burst of at least 1 (got -1/",
    ),
    "rate-limit-without-burst": (
        {"app_deploy_ingress_rate_average": 50, "app_deploy_ingress_rate_burst": 0},
        "a rate limit at least 0 requests a second with a burst of at least 1 (got 50/0)",
    ),
    "tls-certificate-without-key": (
        {"app_deploy_ingress_tls_certificate": CERTIFICATE},
        TLS_PAIR_RULE,
    ),
    "tls-certificate-not-pem": (
        {
            "app_deploy_ingress_tls_certificate": "a certificate",
            "app_deploy_ingress_tls_private_key": KEY,
        },
        TLS_PAIR_RULE,
    ),
    "tls-certificate-without-an-ingress": (
        {
            "app_deploy_exposure": "nodeport",
            "app_deploy_ingress_tls_certificate": CERTIFICATE,
            "app_deploy_ingress_tls_private_key": KEY,
        },
        "for an Ingress (app_deploy_exposure ingress or both) with a Secret named in "
        "app_deploy_ingress_tls_secret (got exposure nodeport, TLS Secret 'webapp-tls')",
    ),
    "tls-certificate-beside-an-acme-resolver": (
        {
            "app_deploy_ingress_tls_certificate": CERTIFICATE,
            "app_deploy_ingress_tls_private_key": KEY,
        },
        "and never with an ACME resolver, which gets the certificate itself "
        "(got app_deploy_ingress_acme_resolver 'lab-acme')",
    ),
    "acme-resolver-not-a-name": (
        {"app_deploy_ingress_acme_resolver": "Lab ACME"},
        "app_deploy_ingress_acme_resolver (the contract's k3s_ec2_acme_resolver) must be empty or "
        'the lower-case name of the Traefik resolver the k3s role defines, got "Lab ACME"',
    ),
    "db-sslmode-unknown": (
        {"app_deploy_db_sslmode": "verify"},
        "value of app_deploy_db_sslmode must be one of: disable, allow, prefer, require, "
        "verify-ca, verify-full, got: verify",
    ),
    "db-ca-file-missing": (
        {"app_deploy_db_ca_file": "/nonexistent/ca.pem"},
        "app_deploy_db_sslmode=verify-full checks the database's certificate and needs its CA "
        "bundle: app_deploy_db_ca_file /nonexistent/ca.pem is not a file. Nothing was changed.",
    ),
    "db-ca-url-plain-http": (
        {"app_deploy_db_ca_file": "", "app_deploy_db_ca_url": "http://example.com/ca.pem"},
        "app_deploy_db_ca_url must be an https:// address",
    ),
    "writer-credential-short": (
        {"app_deploy_writer_credentials": [WRITER, "too-short"]},
        "app_deploy_writer_credentials must hold 32 or more printable ASCII characters without "
        "spaces (1 of 2 do not)",
    ),
    "writer-credential-with-space": (
        {"app_deploy_writer_credentials": ["correct horse battery staple and more"]},
        "app_deploy_writer_credentials must hold 32 or more printable ASCII characters without "
        "spaces (1 of 1 do not)",
    ),
    "secure-cookies-over-plain-http": (
        {"app_deploy_cookie_secure": True, "app_deploy_exposure": "nodeport"},
        "app_deploy_cookie_secure=true needs app_deploy_exposure=ingress with TLS (a Secret in "
        "app_deploy_ingress_tls_secret or an ACME resolver)",
    ),
    "source-revision-not-a-commit": (
        {"app_deploy_source_revision": "main"},
        "app_deploy_source_revision must be a full commit SHA (40 lowercase hex digits) or empty, "
        'got "main"',
    ),
    "writer-credentials-no-source": (
        {"app_deploy_writer_credentials": [], "app_deploy_writers_secret_id": ""},
        "Writes need credentials: set app_deploy_writers_secret_id",
    ),
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def unreachable_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "nowhere",
                "cluster": {
                    "server": f"https://127.0.0.1:{closed_port()}",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "users": [{"name": "nobody", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "current-context": "nowhere",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def deploy(
    kubeconfig: Path, ca_file: Path, overrides: Mapping[str, Any]
) -> subprocess.CompletedProcess[str]:
    extra: dict[str, Any] = {
        "app_deploy_image": TEST_IMAGE,
        "app_deploy_db_ca_file": str(ca_file),
        "app_deploy_kubeconfig": str(kubeconfig),
        "app_deploy_db_host": "db.internal.example",
        "app_deploy_db_password": "not-used-here",
        "app_deploy_writer_credentials": [WRITER],
        **overrides,
    }
    extra = {k: v for k, v in extra.items() if v is not None}
    return run_controller_playbook(
        "deploy.yml", "local", "-e", json.dumps(extra), env=ansible_env()
    )


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return TestCA(tmp_path_factory.mktemp("ca")).cert


@pytest.fixture(scope="module")
def runs(
    unreachable_kubeconfig: Path, ca_file: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """All cases and the control run, a few at a time (each is mostly Ansible starting up)."""
    cases = {name: overrides for name, (overrides, _) in CASES.items()} | {"control": {}}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(deploy, unreachable_kubeconfig, ca_file, o)
            for name, o in cases.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_any_cluster_call(
    runs: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    result = runs[case]
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert CASES[case][1] in output
    assert FIRST_CLUSTER_TASK not in output
    assert "never-printed-key-body" not in output


def test_valid_input_reaches_the_cluster(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = runs["control"]
    output = result.stdout + result.stderr
    # Validation passed, then the first Kubernetes call failed on the closed port.
    assert result.returncode != 0
    assert FIRST_CLUSTER_TASK in output
    assert "Connection refused" in output or "Max retries exceeded" in output, output[-3000:]
