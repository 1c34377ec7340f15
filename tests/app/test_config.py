"""Configuration only from the environment and secret files, with clear start-up errors."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from webapp import config, create_app
from webapp.config import ConfigError

from tests.support.gunicorn import GunicornServer
from tests.support.postgres import PostgresServer


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no database configured"),
        ({"PGHOST": "127.0.0.1", "PGUSER": "u"}, "missing: PGDATABASE"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "must start with postgresql://"),
        ({"DATABASE_URL": "postgresql://u:p@h:notaport/db"}, "invalid port"),
        (
            {"PGHOST": "h", "PGUSER": "u", "PGDATABASE": "d", "PGPORT": "eighty"},
            "PGPORT must be an integer",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "PGPASSWORD_FILE": "/run/secrets/nope"},
            "PGPASSWORD_FILE points to /run/secrets/nope, which does not exist",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "WEBAPP_DB_POOL_MAX": "0"},
            "WEBAPP_DB_POOL_MAX must be between 1 and 100",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "WEBAPP_ADMIN_PORT": "0"},
            "WEBAPP_ADMIN_PORT must be between 1 and 65535",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "WEBAPP_PAGE_CACHE_BYTES": "-1"},
            "WEBAPP_PAGE_CACHE_BYTES must be between 0 and",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db", "WEBAPP_PAGE_CACHE_BYTES": "4M"},
            "WEBAPP_PAGE_CACHE_BYTES must be an integer",
        ),
    ],
)
def test_wrong_configuration_is_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(env)


README = Path(__file__).resolve().parents[2] / "app" / "README.md"
DOCUMENTED = re.compile(r"^\| `(WEBAPP_[A-Z_]+)` \|", re.MULTILINE)
# `| `WEBAPP_NAME` | default | meaning |`: the documented default of one variable.
DOCUMENTED_DEFAULT = re.compile(r"^\| `(WEBAPP_[A-Z_]+)` \| ([^|\u2013]+?) \|", re.MULTILINE)
ANOTHER = {"false": "true", "INFO": "DEBUG"}


def test_the_readme_documents_every_variable_the_configuration_reads() -> None:
    read = set(re.findall(r'"(WEBAPP_[A-Z_]+)"', Path(config.__file__).read_text()))
    assert read
    assert set(DOCUMENTED.findall(README.read_text())) == read


@pytest.mark.parametrize(
    ("name", "default"), DOCUMENTED_DEFAULT.findall(README.read_text()), ids=lambda v: v
)
def test_the_readme_gives_the_defaults_the_service_applies(name: str, default: str) -> None:
    """Unset, the variable reads as its documented default does, and another value differs."""
    base = {"DATABASE_URL": "postgresql://u@h/db"}
    assert config.load({**base, name: default}) == config.load(base)
    other = ANOTHER.get(default) or str(int(default) + 1)
    assert config.load({**base, name: other}) != config.load(base)


def test_secret_never_appears_in_the_error() -> None:
    env = {"DATABASE_URL": "mysql://user:hunter2-secret@h/db"}
    with pytest.raises(ConfigError) as info:
        create_app(env)
    assert "hunter2" not in str(info.value)


def test_gunicorn_stops_with_a_clear_message_without_configuration() -> None:
    server = GunicornServer({})
    try:
        with pytest.raises(RuntimeError) as info:
            server.start(timeout=30)
        text = str(info.value)
        assert "exited with" in text
        assert "configuration error: no database configured" in text
    finally:
        server.cleanup()


def test_gunicorn_refuses_an_admin_port_equal_to_the_public_port(
    db_env: dict[str, str],
) -> None:
    server = GunicornServer(db_env)
    server.env["WEBAPP_ADMIN_PORT"] = str(server.port)
    try:
        with pytest.raises(RuntimeError, match="WEBAPP_ADMIN_PORT must differ from the port of"):
            server.start(timeout=30)
    finally:
        server.cleanup()


@pytest.mark.parametrize("shared", [False, True], ids=["listener", "another-reuse-port-server"])
def test_gunicorn_stops_when_its_port_is_taken(db_env: dict[str, str], shared: bool) -> None:
    """Each worker binds its own socket (reuse_port): unchecked, a worker that cannot was
    forked again forever; a second server that shares the port would split its traffic."""
    server = GunicornServer(db_env)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        try:
            with pytest.raises(
                RuntimeError, match=f"cannot listen on 127.0.0.1:{server.port}: Address already"
            ):
                server.start(timeout=30)
        finally:
            server.cleanup()


def test_password_from_a_secret_file(
    postgres: PostgresServer, db_env: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(postgres.password + "\n")
    secret.chmod(0o600)
    env = {**postgres.env("t_test_config"), "PGPASSWORD_FILE": str(secret)}
    env.pop("PGPASSWORD")
    client = create_app(env).test_client()
    assert client.get("/readyz").status_code == 200

    secret.write_text("not-the-password\n")
    client = create_app(env).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "not_ready"


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "empty"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="which is empty"):
        create_app({"DATABASE_URL": "postgresql://u@h/db", "PGPASSWORD_FILE": str(secret)})


@pytest.mark.parametrize("secure", [True, False])
def test_cookie_secure_turns_on_hsts_and_the_secure_cookie(
    db_env: dict[str, str], secure: bool
) -> None:
    """What the Deployment sets where every client arrives over TLS (app_deploy_cookie_secure)."""
    app = create_app({**db_env, "WEBAPP_COOKIE_SECURE": str(secure).lower()})
    try:
        page = app.test_client().get("/")
        api = app.test_client().get("/api/v1/items")
    finally:
        app.extensions["webapp.db"].close()
    assert page.status_code == 200
    assert ("Strict-Transport-Security" in page.headers) is secure
    assert ("Strict-Transport-Security" in api.headers) is secure  # JSON's smaller set too
    cookie = page.headers["Set-Cookie"]
    assert "webapp_csrf=" in cookie
    assert ("; Secure" in cookie) is secure


def test_gunicorn_refuses_an_admin_port_beside_a_unix_socket(
    db_env: dict[str, str], tmp_path: Path
) -> None:
    """The admin port listens on the public bind's host; a socket has none (it would have
    become a socket file named after the port)."""
    server = GunicornServer(db_env)
    server.env["GUNICORN_BIND"] = f"unix:{tmp_path / 'webapp.sock'}"
    server.env["WEBAPP_ADMIN_PORT"] = "9000"
    try:
        with pytest.raises(
            RuntimeError, match="WEBAPP_ADMIN_PORT needs GUNICORN_BIND as HOST:PORT"
        ):
            server.start(timeout=30)
    finally:
        server.cleanup()
