"""The app_deploy role against the real 1.35 API server, as a user's playbook runs it.

`ansible-playbook -i inventories/local playbooks/deploy.yml` with kubernetes.core.k8s,
the inventory without its AWS parts (the test gives the database itself).
No kubelet runs here, so the role is told `app_deploy_skip_pod_waits: true` (it applies
the migration Job and the Deployment but does not wait for Pods to run or finish); the
objects it stores and a second run's change count are what is checked.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.manifests.render import ROOT, TEST_IMAGE, ansible_env
from tests.support.ansible import run_controller_playbook
from tests.support.controlplane import ControlPlane
from tests.support.ports import free_port
from tests.support.tlsca import TestCA

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

INVENTORY = ROOT / "inventories" / "local"
DB_PASSWORD = secrets.token_urlsafe(18)
WRITER = secrets.token_urlsafe(36)


def deploy(
    tmp: Path, kubeconfig: Path, *options: str, **extra: Any
) -> subprocess.CompletedProcess[str]:
    # The password goes in a 0600 file, not on the command line.
    extra_file = tmp / f"extra-{secrets.token_hex(4)}.json"
    ca_file = tmp / "db-ca.pem"
    if not ca_file.exists():
        ca_file.write_bytes(TestCA(tmp, "db CA").cert.read_bytes())
    extra_file.write_text(
        json.dumps(
            {
                "app_deploy_image": TEST_IMAGE,
                "app_deploy_kubeconfig": str(kubeconfig),
                "app_deploy_db_host": "db.lab.internal",
                "app_deploy_db_password": DB_PASSWORD,
                "app_deploy_writer_credentials": [WRITER],
                "app_deploy_db_ca_file": str(ca_file),
                "app_deploy_skip_pod_waits": True,
                **extra,
            }
        )
    )
    extra_file.chmod(0o600)
    return run_controller_playbook(
        "deploy.yml", "local",
        "-e", f"@{INVENTORY / 'group_vars' / 'all' / 'app.yml'}", "-e", f"@{extra_file}", *options,
        env=ansible_env(), timeout=600,
    )  # fmt: skip


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(
        r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout
    )
    assert match, result.stdout[-3000:] + result.stderr[-2000:]
    return {"ok": int(match[1]), "changed": int(match[2]), "failed": int(match[3])}


@pytest.fixture(scope="module")
def two_runs(
    controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("app-deploy")
    first = deploy(tmp, controlplane.kubeconfig)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    second = deploy(tmp, controlplane.kubeconfig)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-2000:]
    return first, second


def test_first_run_deploys_and_second_run_changes_nothing(two_runs) -> None:
    first, second = two_runs
    assert recap(first)["changed"] > 0
    assert recap(second) == {**recap(second), "changed": 0, "failed": 0}


def test_role_output_never_shows_the_database_password_or_the_write_credential(two_runs) -> None:
    for run in two_runs:
        assert DB_PASSWORD not in run.stdout + run.stderr
        assert WRITER not in run.stdout + run.stderr


def test_the_service_and_its_migration_check_the_databases_certificate(
    two_runs, api: client.ApiClient
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    jobs = client.BatchV1Api(api).list_namespaced_job("webapp").items
    migration = next(j for j in jobs if j.metadata.name.startswith("webapp-migrate-"))
    deployment = apps.read_namespaced_deployment("webapp", "webapp")
    bundle = core.read_namespaced_config_map("webapp-db-ca", "webapp").data["ca.pem"]
    assert bundle.startswith("-----BEGIN CERTIFICATE-----")
    for pod in (deployment.spec.template.spec, migration.spec.template.spec):
        env = {e.name: e.value for e in pod.containers[0].env}
        assert env["PGSSLMODE"] == "verify-full"
        mounts = {m.mount_path: m.name for m in pod.containers[0].volume_mounts}
        volumes = {v.name: v.config_map for v in pod.volumes if v.config_map}
        ca = Path(env["PGSSLROOTCERT"])
        assert volumes[mounts[str(ca.parent)]].name == "webapp-db-ca"
        assert [i.path for i in volumes[mounts[str(ca.parent)]].items] == [ca.name]


def writers_checksum(apps: client.AppsV1Api) -> str:
    template = apps.read_namespaced_deployment("webapp", "webapp").spec.template
    return template.metadata.annotations["k3s-ec2-devsecops/writers-checksum"]


def test_the_service_reads_the_write_credentials_from_their_secret(
    two_runs, api: client.ApiClient
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    stored = core.read_namespaced_secret("webapp-writers", "webapp").data["credentials"]
    assert base64.b64decode(stored).decode() == WRITER + "\n"
    pod = apps.read_namespaced_deployment("webapp", "webapp").spec.template.spec
    env = {e.name: e.value for e in pod.containers[0].env}
    mounts = {m.mount_path: m.name for m in pod.containers[0].volume_mounts}
    volumes = {v.name: v.secret for v in pod.volumes if v.secret}
    path = Path(env["WEBAPP_WRITERS_FILE"])
    mounted = volumes[mounts[str(path.parent)]]
    assert mounted.secret_name == "webapp-writers"  # pragma: allowlist secret
    assert len(writers_checksum(apps)) == 64


def test_new_credentials_roll_the_pods_and_reach_the_secret(
    two_runs, api: client.ApiClient, controlplane: ControlPlane, tmp_path: Path
) -> None:
    """Appending a credential (the first half of replacing one) changes the pod template."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    before = writers_checksum(apps)
    added = secrets.token_urlsafe(36)
    try:
        result = deploy(
            tmp_path, controlplane.kubeconfig, app_deploy_writer_credentials=[WRITER, added]
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert added not in result.stdout + result.stderr
        stored = core.read_namespaced_secret("webapp-writers", "webapp").data["credentials"]
        assert base64.b64decode(stored).decode().splitlines() == [WRITER, added]
        assert writers_checksum(apps) != before
    finally:
        restored = deploy(tmp_path, controlplane.kubeconfig)
        assert restored.returncode == 0, restored.stdout[-6000:]
    assert writers_checksum(apps) == before


def test_stored_objects_are_the_app_with_its_policies(
    two_runs, api: client.ApiClient, controlplane: ControlPlane
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = core.read_namespace("webapp")
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = apps.read_namespaced_deployment("webapp", "webapp")
    assert deployment.spec.template.spec.containers[0].image == TEST_IMAGE
    policies = client.AdmissionregistrationV1Api(api).list_validating_admission_policy().items
    assert any(p.metadata.name.startswith("k3s-ec2-devsecops") for p in policies)
    jobs = client.BatchV1Api(api).list_namespaced_job("webapp").items
    assert any(j.metadata.name.startswith("webapp-migrate-") for j in jobs)
    # The database Secret the role wrote is encrypted in the datastore.
    uri = f"file:{controlplane.sqlite_db}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        row = db.execute(
            "SELECT value FROM kine WHERE name = '/registry/secrets/webapp/webapp-db' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    assert bytes(row[0]).startswith(b"k8s:enc:aescbc:v1:aescbckey:")
    assert DB_PASSWORD.encode() not in bytes(row[0])


def test_the_ingress_keeps_the_given_certificate_and_drops_what_is_turned_off(
    two_runs, api: client.ApiClient, controlplane: ControlPlane, tmp_path: Path
) -> None:
    """The local inventory's certificate comes from Traefik's ACME resolver (no Secret); given a
    certificate and key instead, the role keeps them in the Ingress's TLS Secret and never
    prints the key; with TLS and the rate limit turned off, the HTTPS redirect (a Middleware
    and an IngressRoute on the plain-HTTP entry point) and the limit go, and a second run changes
    nothing."""
    custom, networking = client.CustomObjectsApi(api), client.NetworkingV1Api(api)

    def middlewares() -> list[str]:
        found = custom.list_namespaced_custom_object(
            "traefik.io", "v1alpha1", "webapp", "middlewares"
        )
        return sorted(item["metadata"]["name"] for item in found["items"])

    def ingresses() -> dict[str, dict[str, str]]:
        found = networking.list_namespaced_ingress("webapp").items
        return {i.metadata.name: i.metadata.annotations or {} for i in found}

    def routes() -> list[str]:
        found = custom.list_namespaced_custom_object(
            "traefik.io", "v1alpha1", "webapp", "ingressroutes"
        )
        return [item["metadata"]["name"] for item in found["items"]]

    # The local inventory sets TLS (from the lab's ACME CA) and a rate limit.
    assert middlewares() == ["webapp-https-redirect", "webapp-rate-limit"]
    assert list(ingresses()) == ["webapp"]
    assert routes() == ["webapp-https-redirect"]
    assert (
        ingresses()["webapp"]["traefik.ingress.kubernetes.io/router.tls.certresolver"] == "lab-acme"
    )
    (tls,) = networking.read_namespaced_ingress("webapp", "webapp").spec.tls
    assert (tls.hosts, tls.secret_name) == (["webapp.lab.localhost"], None)
    assert "webapp-tls" not in {
        s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret("webapp").items
    }
    served = TestCA(tmp_path, "ingress CA").issue("ingress", [], ["webapp.lab.localhost"])
    key = served.key.read_text()
    try:
        given = deploy(
            tmp_path,
            controlplane.kubeconfig,
            "-vvv",
            "--diff",
            app_deploy_ingress_acme_resolver="",
            app_deploy_ingress_tls_certificate=served.cert.read_text(),
            app_deploy_ingress_tls_private_key=key,
        )
        assert given.returncode == 0, given.stdout[-6000:]
        (tls,) = networking.read_namespaced_ingress("webapp", "webapp").spec.tls
        assert tls.secret_name == "webapp-tls"  # pragma: allowlist secret
        assert "traefik.ingress.kubernetes.io/router.tls.certresolver" not in ingresses()["webapp"]
        printed = given.stdout + given.stderr
        # Not as given, nor as the Secret holds it, even with every result and diff shown.
        assert key.splitlines()[1] not in printed
        assert base64.b64encode(key.strip().encode()).decode() not in printed
        secret = client.CoreV1Api(api).read_namespaced_secret("webapp-tls", "webapp")
        assert secret.type == "kubernetes.io/tls"
        assert base64.b64decode(secret.data["tls.crt"]).decode() == served.cert.read_text().strip()
        assert base64.b64decode(secret.data["tls.key"]).decode() == key.strip()
        # No copy of a Secret's data in its metadata (kubectl's apply would keep one there).
        core = client.CoreV1Api(api)
        for name, value in (("webapp-tls", key.strip()), ("webapp-db", DB_PASSWORD)):
            annotations = core.read_namespaced_secret(name, "webapp").metadata.annotations or {}
            encoded = base64.b64encode(value.encode()).decode()
            assert not [a for a in annotations.values() if encoded in a or value in a], name
        for _ in range(2):
            off = deploy(
                tmp_path,
                controlplane.kubeconfig,
                app_deploy_ingress_rate_average=0,
                app_deploy_ingress_acme_resolver="",
                app_deploy_ingress_tls_secret="",
            )
            assert off.returncode == 0, off.stdout[-6000:]
            assert middlewares() == []
            assert routes() == []
            assert "traefik.ingress.kubernetes.io/router.middlewares" not in ingresses()["webapp"]
        assert recap(off)["changed"] == 0, "the second run without TLS and limit changed something"
    finally:
        restored = deploy(tmp_path, controlplane.kubeconfig)
        assert restored.returncode == 0, restored.stdout[-6000:]
    assert middlewares() == ["webapp-https-redirect", "webapp-rate-limit"]
    assert routes() == ["webapp-https-redirect"]


def test_bad_kubeconfig_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("this is: [not a kubeconfig\n")
    result = deploy(tmp_path, bad)
    assert result.returncode != 0
    assert recap(result)["failed"] == 1
    assert recap(result)["changed"] == 0
    fatal = result.stdout[result.stdout.index("fatal:") :]
    # The YAML parser's own words, pointing at the file given as app_deploy_kubeconfig.
    assert "while parsing" in fatal
    assert f'in "{bad}"' in fatal


def test_unreachable_server_fails_clearly(controlplane: ControlPlane, tmp_path: Path) -> None:
    config = yaml.safe_load(controlplane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    unreachable.chmod(0o600)
    result = deploy(tmp_path, unreachable)
    assert result.returncode != 0
    assert recap(result)["failed"] == 1
    assert recap(result)["changed"] == 0
    fatal = result.stdout[result.stdout.index("fatal:") :]
    assert re.search(r"(?i)connection refused", fatal), fatal[:3000]
