"""playbooks/smoke.yml against the real service under gunicorn on PostgreSQL.

A healthy service passes and is left as it was found; each broken part fails the step
that reaches it first, with a message naming that step.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.ansible import run_controller_playbook
from tests.support.gunicorn import GunicornServer
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

CREDENTIAL = secrets.token_urlsafe(32)


@pytest.fixture
def writers_database(webapp_database: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The service's database settings plus the write credential, as the Deployment sets them."""
    path = tmp_path / "credentials"
    path.write_text(CREDENTIAL + "\n")
    return {**webapp_database, "WEBAPP_WRITERS_FILE": str(path)}


def smoke(url: str, **settings: object) -> subprocess.CompletedProcess[str]:
    # One try per step: these tests want the verdict, not the patience for a rollout.
    extra = {
        "smoke_base_url": url,
        "smoke_retries": 1,
        "smoke_delay": 1,
        "app_deploy_writer_credentials": [CREDENTIAL],
        **settings,
    }
    return run_controller_playbook("smoke.yml", "local", "-e", json.dumps(extra))


def item_count(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/v1/items?limit=100", timeout=10) as response:  # noqa: S310 - loopback URL the test built
        return len(json.load(response)["items"])


def test_a_healthy_service_passes_and_keeps_no_item(
    writers_database: dict[str, str],
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    server = gunicorn_server(writers_database, admin_port=True)
    before = item_count(server.url)
    result = smoke(server.url + "/")
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"Smoke test passed against {server.url}" in result.stdout
    assert item_count(server.url) == before


def test_nothing_listening_fails_the_healthz_step() -> None:
    result = smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "Smoke step 'healthz' failed" in result.stdout


def test_an_unreachable_database_fails_the_list_step(
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    closed = f"postgresql://webapp@127.0.0.1:{free_port()}/webapp"
    server = gunicorn_server({"DATABASE_URL": closed}, admin_port=True)
    result = smoke(server.url)
    assert result.returncode != 0
    assert "Smoke step 'list items' failed" in result.stdout
    assert "answered 503" in result.stdout and "database_unavailable" in result.stdout
    assert "Smoke step 'healthz' failed" not in result.stdout


def test_a_database_without_the_schema_fails_the_list_step(
    postgres: PostgresServer,
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    server = gunicorn_server(
        {"DATABASE_URL": postgres.create_database("smoke_unmigrated")}, admin_port=True
    )
    result = smoke(server.url)
    assert result.returncode != 0
    assert "Smoke step 'list items' failed" in result.stdout
    assert "Smoke step 'healthz' failed" not in result.stdout


def test_open_writes_fail_the_anonymous_write_step_and_keep_no_item(
    webapp_database: dict[str, str],
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    """The service without WEBAPP_WRITERS_FILE lets anyone write."""
    server = gunicorn_server(webapp_database, admin_port=True)
    before = item_count(server.url)
    result = smoke(server.url)
    assert result.returncode != 0
    assert "Smoke step 'anonymous write' failed" in result.stdout
    assert "anyone may write" in result.stdout
    assert item_count(server.url) == before


def test_a_wrong_credential_fails_the_create_step_and_is_never_shown(
    writers_database: dict[str, str],
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    server = gunicorn_server(writers_database, admin_port=True)
    wrong = secrets.token_urlsafe(32)
    result = smoke(server.url, app_deploy_writer_credentials=[wrong])
    assert result.returncode != 0
    assert "Smoke step 'create item' failed" in result.stdout
    assert "answered 401" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_metrics_served_on_the_public_address_fail_the_internal_paths_step(
    writers_database: dict[str, str],
    gunicorn_server: Callable[..., GunicornServer],
) -> None:
    """The service without its admin port answers /metrics and /readyz to anyone."""
    server = gunicorn_server(writers_database)
    result = smoke(server.url)
    assert result.returncode != 0
    assert (
        f"Smoke step 'internal paths' failed: {server.url}/metrics, {server.url}/readyz "
        "answered through the public address"
    ) in result.stdout


def test_without_an_address_it_tests_the_one_the_deploy_settings_publish() -> None:
    """No smoke_base_url: the address is the deploy stage's NodePort URL, here computed from
    the settings, and the failure names it."""
    port = free_port()
    result = smoke(
        "",
        app_deploy_exposure="nodeport",
        app_deploy_node_address="127.0.0.1",
        app_deploy_nodeport=port,
    )
    assert result.returncode != 0
    assert f"Smoke step 'healthz' failed: GET http://127.0.0.1:{port}/healthz" in result.stdout
