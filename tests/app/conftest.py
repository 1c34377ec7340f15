"""Fixtures of the service's tests: a fresh migrated database per module, the Flask app."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webapp import create_app

from tests.conftest import migrate
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def db_env(postgres: PostgresServer, request: pytest.FixtureRequest) -> dict[str, str]:
    """DATABASE_URL of a database made and migrated for this test module only."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    env = {"DATABASE_URL": postgres.create_database(name)}
    result = migrate(env)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="module")
def app(db_env: dict[str, str]) -> Iterator[Flask]:
    flask_app = create_app(db_env)
    yield flask_app
    flask_app.extensions["webapp.db"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def writer_credentials() -> list[str]:
    """Two write credentials (as during a rotation), fresh for each module."""
    return [secrets.token_urlsafe(32), secrets.token_urlsafe(32)]


@pytest.fixture(scope="module")
def writers_env(
    db_env: dict[str, str], writer_credentials: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """db_env with WEBAPP_WRITERS_FILE, as the Deployment sets it: writes need a credential."""
    path = Path(tmp_path_factory.mktemp("writers")) / "credentials"
    path.write_text("\n".join(writer_credentials) + "\n")
    path.chmod(0o600)
    return {**db_env, "WEBAPP_WRITERS_FILE": str(path)}
