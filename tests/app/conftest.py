"""Fixtures of the service's tests: a fresh migrated database per module, the Flask app."""

from __future__ import annotations

import re
from collections.abc import Iterator

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
