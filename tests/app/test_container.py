"""The service's image: built with podman on the local Debian base, run read-only as uid 10001."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/webapp-python:3.11-bookworm"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    subprocess.run(
        ["bash", str(ROOT / "scripts/build-base-image.sh"), BASE_IMAGE],
        check=True,
        timeout=900,
    )
    tag = f"localhost/app-webapp:test-{uuid.uuid4().hex[:8]}"
    # This machine reaches PyPI through a TLS-inspecting proxy: hand pip its CA bundle.
    secret = []
    if Path(HOST_CA_BUNDLE).is_file():
        secret = ["--secret", f"id=pip_ca,src={HOST_CA_BUNDLE}"]
    # No layer cache: nothing of this build is left behind but the tagged image.
    build = ["build", "--pull=never", "--layers=false", "--network=host"]
    build += ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", *secret, "-t", tag]
    podman(*build, "-f", str(ROOT / "app/Containerfile"), str(ROOT / "app"), timeout=900)
    yield tag
    podman("rmi", "-f", tag, check=False)


def test_image_runs_non_root_without_build_tools(image: str) -> None:
    inspect = podman("image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip()
    assert inspect == "10001:10001"
    probe = (
        "import os, shutil, importlib.util as u;"
        "tools = [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)];"
        "print(os.getuid(), os.getgid(), u.find_spec('pip') is None, ','.join(tools) or '-')"
    )
    out = podman("run", "--rm", "--read-only", image, "python3", "-c", probe).stdout.split()
    assert out == ["10001", "10001", "True", "-"]


def test_libpq_in_the_image_finds_the_systems_ca_store(image: str) -> None:
    """sslrootcert=system makes libpq load OpenSSL's default store; the OpenSSL that
    psycopg2-binary bundles must be pointed at the image's CA bundle to find one."""
    probe = (
        "import ctypes, glob, os, psycopg2\n"
        "libs = os.path.join(os.path.dirname(psycopg2.__file__), '..', 'psycopg2_binary.libs')\n"
        "crypto = ctypes.CDLL(glob.glob(os.path.join(libs, 'libcrypto*'))[0])\n"
        "for name in ('X509_get_default_cert_file', 'X509_get_default_cert_file_env'):\n"
        "    getattr(crypto, name).restype = ctypes.c_char_p\n"
        "variable = crypto.X509_get_default_cert_file_env().decode()\n"
        "path = os.environ.get(variable) or crypto.X509_get_default_cert_file().decode()\n"
        "print(os.path.isfile(path) and open(path).read().count('BEGIN CERTIFICATE'))\n"
    )
    out = podman("run", "--rm", "--read-only", image, "python3", "-c", probe).stdout.strip()
    assert out.isdigit() and int(out) > 50, f"libpq finds no CA store in the image: {out}"


def test_read_only_container_serves_and_reaches_postgres(
    image: str, postgres: PostgresServer
) -> None:
    dsn = postgres.create_database("t_container")
    port = free_port()
    name = f"app-webapp-{uuid.uuid4().hex[:8]}"
    common = [
        "--network=host",
        "--read-only",
        "--tmpfs=/tmp:rw,size=16m,mode=1777",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--env=DATABASE_URL={dsn}",
    ]
    podman("run", "--rm", *common, image, "python", "-m", "webapp.migrate")
    podman("run", "-d", "--name", name, *common, "-e", f"GUNICORN_BIND=127.0.0.1:{port}", image)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(0.5)
        assert requests.get(url + "/readyz", timeout=5).status_code == 200
        resp = requests.post(url + "/api/v1/items", json={"name": "from the image"}, timeout=5)
        assert resp.status_code == 201
        assert "from the image" in requests.get(url + "/", timeout=5).text
        metrics = requests.get(url + "/metrics", timeout=5).text
        assert 'http_requests_total{method="POST",route="/api/v1/items",status="201"}' in metrics
        users = podman("top", name, "huser").stdout.split()[1:]
        assert users, "no process in the container"
        assert set(users) == {"10001"}, users
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "-f", name, check=False)
    assert "Read-only file system" not in logs.stdout + logs.stderr
