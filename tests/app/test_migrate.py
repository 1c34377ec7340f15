"""`python -m webapp.migrate`: ordered, idempotent, safe with two runners at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import psycopg2
import pytest
from webapp import create_app
from webapp import migrate as migrations

from tests.conftest import migrate
from tests.support.gunicorn import APP_DIR
from tests.support.postgres import PostgresServer


def rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        result = cur.fetchall()
    conn.close()
    return result


def test_two_runners_at_once_apply_each_migration_once(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("t_migrate_concurrent")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "DATABASE_URL": dsn,
        "PYTHONPATH": str(APP_DIR),
    }
    # Hold the advisory lock so both runners are certainly waiting at the same time.
    holder = psycopg2.connect(dsn)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (migrations.LOCK_KEY,))
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "webapp.migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    waiting = 0
    for _ in range(100):
        (waiting,) = rows(
            postgres.dsn_for("postgres"),
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'webapp-migrate' AND wait_event_type = 'Lock'",
        )[0]
        if waiting == 2:
            break
        time.sleep(0.1)
    assert waiting == 2, "both runners should wait on the advisory lock"
    holder.close()
    outputs = [runner.communicate(timeout=60) for runner in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    applied = rows(dsn, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in applied] == [m.version for m in migrations.discover()]
    # Exactly one of them did the work; the other found nothing left to do.
    logs = "".join(out for out, _ in outputs)
    assert logs.count('"migration applied"') == len(applied)


def test_second_run_changes_nothing(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("t_migrate_idempotent")
    assert migrate({"DATABASE_URL": dsn}).returncode == 0
    before = rows(dsn, "SELECT version, checksum, applied_at FROM schema_migrations")
    result = migrate({"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert '"applied": []' in result.stdout
    assert rows(dsn, "SELECT version, checksum, applied_at FROM schema_migrations") == before


def test_edited_migration_is_refused(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("t_migrate_edited")
    assert migrate({"DATABASE_URL": dsn}).returncode == 0
    edited = [
        migrations.Migration(m.version, m.name, m.sql + "\n-- edited")
        for m in migrations.discover()
    ]
    conn = psycopg2.connect(dsn)
    try:
        with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
            migrations.apply(conn, edited)
    finally:
        conn.close()


def test_failing_migration_leaves_no_trace_and_releases_the_lock(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("t_migrate_failing")
    good = migrations.discover()
    broken = [*good, migrations.Migration("9999", "9999_broken.sql", "CREATE TABLE oops (;")]
    conn = psycopg2.connect(dsn)
    try:
        with pytest.raises(psycopg2.Error):
            migrations.apply(conn, broken)
    finally:
        conn.close()
    versions = [v for (v,) in rows(dsn, "SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in good]
    assert rows(dsn, "SELECT to_regclass('oops')") == [(None,)]
    # The lock went with the session: a new run proceeds at once.
    assert migrate({"DATABASE_URL": dsn}).returncode == 0


def test_unreachable_database_is_a_clear_error() -> None:
    result = migrate({"DATABASE_URL": "postgresql://webapp:secret-pw@127.0.0.1:9/webapp"})
    assert result.returncode == 1
    assert "cannot connect to the database at 127.0.0.1:9/webapp" in result.stderr
    assert "secret-pw" not in result.stderr + result.stdout


def test_items_written_before_and_beside_the_service_are_served_as_it_writes_them(
    postgres: PostgresServer,
) -> None:
    """Migration 0002 keeps each item's JSON in `doc`: rows of the first release get theirs,
    and a writer that is not the service (a pod of the previous release, psql in another
    time zone) cannot leave it stale."""
    dsn = postgres.create_database("t_migrate_item_doc")
    first, *later = migrations.discover()
    conn = psycopg2.connect(dsn)
    try:
        migrations.apply(conn, [first])
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO items (name, description) VALUES ('older', 'from 0001')")
        migrations.apply(conn, [first, *later])
        with conn, conn.cursor() as cur:
            cur.execute("SET TimeZone = 'Asia/Tokyo'")
            cur.execute("INSERT INTO items (name) VALUES ('from Tokyo')")
            cur.execute("UPDATE items SET name = 'renamed' WHERE name = 'older'")
    finally:
        conn.close()
    app = create_app({"DATABASE_URL": dsn})
    try:
        served = app.test_client().get("/api/v1/items").get_json()["items"]
    finally:
        app.extensions["webapp.db"].close()
    assert [(i["name"], i["description"]) for i in served] == [
        ("renamed", "from 0001"),
        ("from Tokyo", ""),
    ]
    for item in served:
        assert set(item) == {"id", "name", "description", "created_at", "updated_at"}
        assert item["created_at"].endswith("+00:00") and item["updated_at"].endswith("+00:00")
    assert rows(dsn, "SELECT count(*) FROM items WHERE doc IS NULL") == [(0,)]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_service_is_not_ready_until_its_migrations_ran(postgres: PostgresServer) -> None:
    """A pod started against a database its migrations have not reached takes no traffic
    (its lists would fail on what they need), and says which migrations it lacks; a
    database a later release has migrated further is ready for this one (a rollback)."""
    dsn = postgres.create_database("t_migrate_readiness")
    shipped = migrations.discover()
    versions = [m.version for m in shipped]
    run = "run the migrations (python -m webapp.migrate)"
    app = create_app({"DATABASE_URL": dsn})
    # create_app gives the root logger its JSON handler alone: listen on the probe's logger.
    probe_log, logged = logging.getLogger("webapp.health"), _Records()
    probe_log.addHandler(logged)
    try:
        client = app.test_client()
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.get_json() == {
            "error": "not_ready",
            "detail": f"the database lacks this release's migrations {', '.join(versions)}: {run}",
        }
        # The kubelet keeps only the status: the reason is logged, once while it holds.
        client.get("/readyz")
        lacking = [r for r in logged.records if r.getMessage().startswith("not ready")]
        assert [r.lacking for r in lacking] == [versions]  # type: ignore[attr-defined]

        # The release before's schema: every migration but the last.
        conn = psycopg2.connect(dsn)
        try:
            migrations.apply(conn, shipped[:-1])
        finally:
            conn.close()
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.get_json()["detail"] == (
            f"the database lacks this release's migrations {versions[-1]}: {run}"
        )

        assert migrate({"DATABASE_URL": dsn}).returncode == 0
        assert client.get("/readyz").get_json() == {"status": "ready"}
        assert any(r.getMessage().startswith("ready:") for r in logged.records)

        # A later release's migration applied: still ready. One of this release's gone
        # (a restored or hand-edited table): not ready, though the latest is there.
        later = str(int(versions[-1]) + 1).zfill(4)
        rows(
            dsn,
            "INSERT INTO schema_migrations (version, name, checksum) "
            "VALUES (%s, %s, 'x') RETURNING version",
            (later, f"{later}_later.sql"),
        )
        assert client.get("/readyz").status_code == 200
        rows(dsn, "DELETE FROM schema_migrations WHERE version = %s RETURNING 1", (versions[0],))
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert f"migrations {versions[0]}:" in resp.get_json()["detail"]
    finally:
        probe_log.removeHandler(logged)
        app.extensions["webapp.db"].close()
