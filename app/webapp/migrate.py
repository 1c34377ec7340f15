"""Schema migrations: `python -m webapp.migrate` (run as its own Kubernetes Job).

Migrations are the ordered `NNNN_name.sql` files next to this module. Each one is
applied in its own transaction together with its row in `schema_migrations`
(version, checksum), all under a PostgreSQL advisory lock, so two runners at
once apply each file exactly once and a second run changes nothing. A file
edited after it was applied is reported, not re-run. Every pod's /readyz reads
`schema_migrations`: a migration that locks it (ALTER TABLE) turns them all unready.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from importlib import resources

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from webapp import config

# Fixed key of the advisory lock that serialises migration runners ("webapp" in hex).
LOCK_KEY = 0x776562617070
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    found = []
    for entry in resources.files("webapp.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"migration file {entry.name} is not named NNNN_name.sql")
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def missing(cur: psycopg2.extensions.cursor, versions: list[str]) -> list[str]:
    """Which of `versions` the database has not applied (all of them without the table).

    Versions the database has beyond these (a later release's) do not count: each
    migration keeps the schema readable by the release before it. Runs on a connection in
    autocommit mode, where a missing table ends only this statement.
    """
    try:
        cur.execute(
            "SELECT version FROM schema_migrations WHERE version = ANY(%s)", (list(versions),)
        )
    except psycopg2.errors.UndefinedTable:
        return list(versions)
    applied = {row[0] for row in cur.fetchall()}
    return [version for version in versions if version not in applied]


def _log(msg: str, **fields: object) -> None:
    print(
        json.dumps({"level": "info", "logger": "webapp.migrate", "msg": msg, **fields}), flush=True
    )


def apply(conn: psycopg2.extensions.connection, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    applied_now: list[str] = []
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        with conn, conn.cursor() as cur:
            cur.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(cur.fetchall())
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            with conn, conn.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration.version)
            _log("migration applied", version=migration.version, name=migration.name)
    finally:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def _connect(settings: config.Settings, wait: float) -> psycopg2.extensions.connection:
    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg2.connect(
                settings.dsn,
                connect_timeout=settings.connect_timeout_s,
                application_name="webapp-migrate",
            )
        except psycopg2.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise MigrationError(
                    f"cannot connect to the database at {settings.db_target}: {str(exc).strip()}"
                ) from None
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.migrate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep retrying the database connection this long (default: 0)",
    )
    args = parser.parse_args(argv)
    try:
        settings = config.load()
        migrations = discover()
        conn = _connect(settings, args.wait)
        try:
            applied = apply(conn, migrations)
        finally:
            conn.close()
    except (config.ConfigError, MigrationError) as exc:
        print(
            json.dumps({"level": "error", "logger": "webapp.migrate", "msg": str(exc)}),
            file=sys.stderr,
            flush=True,
        )
        return 1
    except psycopg2.Error as exc:
        print(
            json.dumps(
                {
                    "level": "error",
                    "logger": "webapp.migrate",
                    "msg": f"migration failed: {str(exc).strip()}",
                }
            ),
            file=sys.stderr,
            flush=True,
        )
        return 1
    _log("schema up to date", applied=applied, total=len(migrations))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
