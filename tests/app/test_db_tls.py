"""The database connection verifies the server: PGSSLMODE=verify-full with PGSSLROOTCERT,
against a real PostgreSQL that serves TLS from a test CA (as RDS does from Amazon's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webapp import create_app
from webapp.config import ConfigError

from tests.conftest import migrate
from tests.support.postgres import PostgresServer
from tests.support.tlsca import ServerFiles, TestCA


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca, other = TestCA(directory, "db CA"), TestCA(directory, "other CA")
    server = ca.issue("db", ips=["127.0.0.1"])
    return {"ca": ca.cert, "other": other.cert, "cert": server.cert, "key": server.key}


@pytest.fixture(scope="module")
def tls_postgres(certs: dict[str, Path]) -> Iterator[PostgresServer]:
    server = PostgresServer(tls=ServerFiles(certs["cert"], certs["key"])).start()
    try:
        # Migrated: /readyz answers 200 only with this release's schema.
        result = migrate(server.env())
        assert result.returncode == 0, result.stderr
        yield server
    finally:
        server.destroy()


def readyz(env: dict[str, str]) -> tuple[int, str]:
    app = create_app(env)
    try:
        response = app.test_client().get("/readyz")
        return response.status_code, response.get_data(as_text=True)
    finally:
        app.extensions["webapp.db"].close()


def tcp_sessions_over_tls(server: PostgresServer) -> list[str]:
    return server.psql(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.client_addr IS NOT NULL"
    ).split()


def test_verify_full_with_the_servers_ca_connects_over_tls(
    tls_postgres: PostgresServer, certs: dict[str, Path]
) -> None:
    env = {**tls_postgres.env(), "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(certs["ca"])}
    app = create_app(env)
    try:
        assert app.test_client().get("/readyz").status_code == 200
        # The pool keeps its connection open: the server sees it, encrypted.
        assert tcp_sessions_over_tls(tls_postgres) == ["t"]
    finally:
        app.extensions["webapp.db"].close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"root": "other"}, "a server whose certificate another CA signed"),
        ({"PGHOST": "localhost"}, "a name the certificate does not carry"),
    ],
    ids=["unknown-ca", "wrong-name"],
)
def test_verify_full_refuses(
    tls_postgres: PostgresServer, certs: dict[str, Path], change: dict[str, str], reason: str
) -> None:
    root = certs[change.pop("root", "ca")]
    env = {**tls_postgres.env(), "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(root), **change}
    status, body = readyz(env)
    assert status == 503, f"connected to {reason}: {body}"
    assert "cannot connect to the database" in body
    # `require` without a CA file (encryption, no verification) connects: verify-full refused.
    unverified = {k: v for k, v in env.items() if k != "PGSSLROOTCERT"}
    status, _ = readyz({**unverified, "PGSSLMODE": "require"})
    assert status == 200


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"PGSSLMODE": "verify-full"}, "PGSSLMODE=verify-full needs PGSSLROOTCERT"),
        ({"PGSSLMODE": "verify-ca"}, "PGSSLMODE=verify-ca needs PGSSLROOTCERT"),
        ({"PGSSLMODE": "verify_full"}, "PGSSLMODE must be one of disable, allow, prefer"),
        (
            {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/nonexistent/ca.pem"},
            "PGSSLROOTCERT points to /nonexistent/ca.pem, which is not a file",
        ),
    ],
)
def test_tls_settings_are_checked_at_start(
    tls_postgres: PostgresServer, settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({**tls_postgres.env(), **settings})


def url_env(server: PostgresServer, query: str) -> dict[str, str]:
    """DATABASE_URL alone, as a user who keeps the database in one string would set it."""
    pg = server.env()
    url = (
        f"postgresql://{pg['PGUSER']}:{pg['PGPASSWORD']}@{pg['PGHOST']}:{pg['PGPORT']}"
        f"/{pg['PGDATABASE']}?{query}"
    )
    return {"DATABASE_URL": url}


def test_database_url_verifies_the_server_too(
    tls_postgres: PostgresServer, certs: dict[str, Path]
) -> None:
    status, _ = readyz(url_env(tls_postgres, f"sslmode=verify-full&sslrootcert={certs['ca']}"))
    assert status == 200
    status, body = readyz(
        url_env(tls_postgres, f"sslmode=verify-full&sslrootcert={certs['other']}")
    )
    assert status == 503, f"connected to a server another CA vouches for: {body}"
    assert "cannot connect to the database" in body


@pytest.mark.parametrize("store", ["ca", "other"])
def test_system_trusts_the_ca_store_that_ssl_cert_file_names(
    tls_postgres: PostgresServer,
    certs: dict[str, Path],
    store: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PGSSLROOTCERT=system (libpq 16+) trusts the CA store OpenSSL is told of: the image sets
    SSL_CERT_FILE to Debian's bundle, since the OpenSSL inside psycopg2-binary looks for one
    in its own build directory. A store with the server's CA connects; another is refused."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certs[store]))
    status, body = readyz(
        {**tls_postgres.env(), "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "system"}
    )
    assert status == (200 if store == "ca" else 503), body
    assert store == "ca" or "cannot connect to the database" in body


@pytest.mark.parametrize(
    ("query", "env", "message"),
    [
        ("sslmode=verify-full", {}, "DATABASE_URL's sslmode=verify-full needs PGSSLROOTCERT"),
        ("sslmode=verify", {}, "DATABASE_URL's sslmode must be one of disable"),
        ("sslrootcert=/nonexistent/ca.pem", {}, "DATABASE_URL's sslrootcert points to /nonexis"),
        ("", {"PGSSLMODE": "verify-full"}, "PGSSLMODE=verify-full needs PGSSLROOTCERT"),
        ("sslmode=require&sslrootcert=system", {}, "sslrootcert=system needs sslmode verify-full"),
    ],
    ids=["verify-without-ca", "unknown-mode", "missing-ca-file", "env-mode", "system-with-require"],
)
def test_database_url_tls_settings_are_checked_at_start(
    tls_postgres: PostgresServer, query: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        create_app({**url_env(tls_postgres, query), **env})
    assert tls_postgres.password not in str(caught.value)
