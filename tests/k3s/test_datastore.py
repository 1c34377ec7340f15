"""The RDS datastore endpoint: the role's own expression, its Secrets Manager lookup, moto."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest

from tests.support.moto import MotoServer

PASSWORD = "s3cr:t/p@ss?#%"

# validate.yml only reads: it checks variables and gathers facts of the controller itself.
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the role's checks, keeping its variables
      ansible.builtin.include_role:
        name: devsecops.k3s_ec2.k3s
        tasks_from: validate.yml
        public: true
    - name: Write the endpoint the config file would get
      ansible.builtin.copy:
        content: "{{ k3s_rds_datastore_endpoint }}"
        dest: "{{ out }}"
        mode: "0600"
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def run(
    tmp: Path,
    env: dict[str, str],
    moto: MotoServer,
    secret: str,
    extra: dict[str, object] | None = None,
) -> tuple[int, str, Path]:
    (tmp / "play.yml").write_text(PLAY)
    (tmp / "inventory.ini").write_text(
        "localhost ansible_connection=local"
        " ansible_python_interpreter={{ ansible_playbook_python }}\n"
    )
    out = tmp / "endpoint"
    variables = {
        "k3s_datastore": "rds",
        "k3s_aws_endpoint_url": moto.endpoint_url,
        "k3s_aws_region": "us-east-1",
        "out": str(out),
        # As the rds stage publishes them on localhost.
        "rds_endpoint_address": "k3s-db.example.internal",
        "rds_endpoint_port": 5432,
        "rds_k3s_db_name": "k3s",
        "rds_k3s_secret_name": secret,
        "rds_ca_url": "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem",
        **(extra or {}),
    }
    extra = json.dumps(variables)
    result = subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.ini"), str(tmp / "play.yml"), "-e", extra],
        env={**env, **moto.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, out


@pytest.fixture(scope="module")
def secret(moto: MotoServer) -> str:
    """k3s's login as the database stage stores it."""
    client = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=moto.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    value = json.dumps(
        {"username": "k3s_admin", "password": PASSWORD, "host": "other", "port": 5432}
    )
    client.create_secret(Name="k3s-ec2/test/rds", SecretString=value)
    return "k3s-ec2/test/rds"


def test_endpoint_is_built_from_the_rds_facts_and_the_secret(
    tmp_path: Path, ansible_env: dict[str, str], moto: MotoServer, secret: str
) -> None:
    rc, output, out = run(tmp_path, ansible_env, moto, secret)
    assert rc == 0, output[-3000:]
    parts = urlsplit(out.read_text())
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "postgres",
        "k3s-db.example.internal",
        5432,
        "/k3s",
    )
    assert parts.username == "k3s_admin"
    assert unquote(parts.password or "") == PASSWORD
    # The server's certificate is checked against the bundle the servers keep.
    assert parse_qs(parts.query) == {
        "sslmode": ["verify-full"],
        "sslrootcert": ["/etc/rancher/k3s/datastore-ca.pem"],
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rds_ca_url": "http://example.com/ca.pem"}, "a CA bundle: file '' or https"),
        ({"rds_ca_file": "/nonexistent/ca.pem"}, "file '/nonexistent/ca.pem'"),
    ],
    ids=["plain-http-bundle", "missing-bundle-file"],
)
def test_verify_full_without_a_usable_ca_bundle_is_refused(
    tmp_path: Path,
    ansible_env: dict[str, str],
    moto: MotoServer,
    extra: dict[str, object],
    message: str,
    secret: str,
) -> None:
    rc, output, out = run(tmp_path, ansible_env, moto, secret, extra)
    assert rc != 0 and message in output, output[-3000:]
    assert not out.exists()


def test_require_names_no_ca_bundle(
    tmp_path: Path, ansible_env: dict[str, str], moto: MotoServer, secret: str
) -> None:
    rc, output, out = run(tmp_path, ansible_env, moto, secret, {"k3s_rds_sslmode": "require"})
    assert rc == 0, output[-3000:]
    assert urlsplit(out.read_text()).query == "sslmode=require"


def test_missing_secret_fails_without_writing(
    tmp_path: Path, ansible_env: dict[str, str], moto: MotoServer
) -> None:
    rc, output, out = run(tmp_path, ansible_env, moto, "k3s-ec2/test/absent")
    assert rc != 0
    assert not out.exists()
    assert "k3s-ec2/test/absent" in output or "ResourceNotFound" in output, output[-3000:]
