"""Fixtures shared by every suite: a real PostgreSQL server and the service under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.support import labingress
from tests.support.controlplane import ControlPlane, build_binary
from tests.support.gunicorn import APP_DIR, GunicornServer
from tests.support.postgres import PostgresServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the Go-built control plane go last, in their order: `make test`
    starts its build beside the fast suites, and it can outlast them by minutes, which the
    slow suites that need no build (Molecule, sanity, the container) now fill."""
    items.sort(key=lambda item: item.get_closest_marker("controlplane") is not None)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the whole session (each suite makes its own databases)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


def migrate(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m webapp.migrate` with `env` (database settings) as the Job would."""
    scrubbed = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("PG")
    }
    full_env = {**scrubbed, **env, "PYTHONPATH": str(APP_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "webapp.migrate"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def webapp_database(postgres: PostgresServer) -> dict[str, str]:
    """A migrated database for the service; returns the env (DATABASE_URL) that reaches it."""
    env = {"DATABASE_URL": postgres.create_database("webapp_shared")}
    result = migrate(env)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture
def gunicorn_server() -> Iterator[Callable[..., GunicornServer]]:
    """Factory `gunicorn_server(env_overrides, workers=2)`: the service, stopped at teardown."""
    servers: list[GunicornServer] = []

    def start(
        env_overrides: Mapping[str, str] | None = None, workers: int = 2, **kwargs: object
    ) -> GunicornServer:
        server = GunicornServer(env_overrides, workers=workers, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    """The Go-built control plane (built on first use) on 127.0.0.1, with no node; with
    Traefik's CRDs, as a k3s server installs them."""
    build_binary()
    server = ControlPlane().start()
    try:
        labingress.apply_crds(server.kubeconfig)
        yield server
    finally:
        server.destroy()
