"""The database goes away and comes back: /readyz follows, no row is lost, no restart needed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import migrate
from tests.support.postgres import PostgresServer


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of its own: stopping it must not disturb the other tests' database."""
    with PostgresServer() as server:
        yield server


def wait_status(url: str, status: int, timeout: float = 20) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(url, timeout=10)
        if resp.status_code == status or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_database_restart(own_postgres: PostgresServer, gunicorn_server) -> None:
    env = {"DATABASE_URL": own_postgres.create_database("webapp")}
    assert migrate(env).returncode == 0
    server = gunicorn_server(env, workers=2)
    api = server.url + "/api/v1/items"

    made = []
    for i in range(20):  # enough requests that both workers hold pooled connections
        resp = requests.post(api, json={"name": f"before-{i}"}, timeout=10)
        assert resp.status_code == 201
        made.append(resp.json()["id"])
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200

    own_postgres.stop()
    resp = wait_status(server.url + "/readyz", 503)
    assert resp.status_code == 503
    assert resp.json()["error"] == "not_ready"
    # Liveness does not depend on the database: Kubernetes must not restart the pod.
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    resp = requests.get(api, timeout=10)
    assert resp.status_code == 503
    assert resp.json()["error"] == "database_unavailable"
    assert requests.post(api, json={"name": "while-down"}, timeout=10).status_code == 503

    own_postgres.start()
    assert wait_status(server.url + "/readyz", 200).status_code == 200
    # Every worker's pool held dead connections: each request must still succeed.
    for i in range(20):
        resp = requests.post(api, json={"name": f"after-{i}"}, timeout=10)
        assert resp.status_code == 201, resp.text
        made.append(resp.json()["id"])
        assert requests.get(api, params={"limit": 1}, timeout=10).status_code == 200

    # A quick restart nobody noticed: the pools hold only dead connections now, and
    # the very first requests after it must not fail.
    own_postgres.stop()
    own_postgres.start()
    for i in range(10):
        resp = requests.post(api, json={"name": f"after-restart-{i}"}, timeout=10)
        assert resp.status_code == 201, resp.text
        made.append(resp.json()["id"])

    listed = requests.get(api, params={"limit": 100}, timeout=10).json()["items"]
    assert [row["id"] for row in listed] == made
    assert "while-down" not in {row["name"] for row in listed}

    # Reads skip the check of a pooled connection on their first try (a broken one is
    # retried on a checked one), and the page each worker holds is read again.
    for _ in range(10):  # every worker holds the page and pooled connections
        assert requests.get(api, params={"limit": 100}, timeout=10).status_code == 200
    own_postgres.stop()
    own_postgres.start()
    for _ in range(10):
        resp = requests.get(api, params={"limit": 100}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert [row["id"] for row in resp.json()["items"]] == made
