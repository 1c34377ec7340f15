"""The database connection verifies the server: PGSSLMODE=verify-full with PGSSLROOTCERT,
against a real PostgreSQL that serves TLS from a test CA (as RDS does from Amazon's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webapp import create_app
from webapp.config import ConfigError

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
