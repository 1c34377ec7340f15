"""A real PostgreSQL 15 server for tests, run as the `postgres` system user.

The server refuses to run as root, so every server command goes through
`runuser -u postgres` when the tests run as root. The server listens only on
127.0.0.1 (a free port) and on a unix socket in its own directory; TCP clients
authenticate with a password (scram-sha-256), as the service does in production.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import psycopg2.extensions

from tests.support.ports import free_port
from tests.support.tlsca import ServerFiles

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SYSTEM_USER = "postgres"
T = TypeVar("T")


@dataclass(frozen=True)
class TableReads:
    """What a unit of work did to a table, from its backend's own counters."""

    scans: int  # sequential and index scans
    seq_scans: int
    locked: bool  # it holds a lock on the table (until the transaction ends)


def counted_reads(
    cur: psycopg2.extensions.cursor, table: str, work: Callable[[], T]
) -> tuple[T, TableReads]:
    """`work()` in a transaction of its own on `cur`'s connection (in autocommit), and
    what it did to `table`. The backend's counts not yet reported to the statistics stay
    put inside a transaction, so the difference is `work`'s alone."""

    def counts() -> tuple[int, int]:
        cur.execute(
            "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
            " WHERE relid = %s::regclass",
            (table,),
        )
        return cur.fetchone()

    cur.execute("BEGIN")
    seq_before, index_before = counts()
    result = work()
    seq_after, index_after = counts()
    cur.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND relation = %s::regclass",
        (table,),
    )
    (locks,) = cur.fetchone()
    cur.execute("COMMIT")
    seq_scans = seq_after - seq_before
    return result, TableReads(seq_scans + index_after - index_before, seq_scans, locks > 0)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory.

    `start()` initialises the cluster on first use; `stop()` keeps the data so a
    later `start()` brings back the same rows on the same port; `destroy()`
    removes everything.
    """

    def __init__(
        self, user: str = "postgres", password: str | None = None, tls: ServerFiles | None = None
    ) -> None:
        self.user = user
        self.tls = tls
        self.password = password or secrets.token_urlsafe(16)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.datadir = self.base / "data"
        self.socketdir = self.base / "socket"
        self.logfile = self.base / "postgres.log"
        self._initialised = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            self._give_to_server(self.base)
        self.base.chmod(0o700)

    # -- process control -------------------------------------------------
    def _run(
        self, *cmd: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(PG_BIN / cmd[0]), *cmd[1:]]
        if self._as_root:
            argv = ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{cmd[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}"
            )
        return result

    def _initdb(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            self._give_to_server(pwfile)
        pwfile.chmod(0o600)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._make_socketdir()
        self._initialised = True

    def _give_to_server(self, path: Path) -> None:
        """Make `path` the server's system user's (the tests run as root)."""
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _make_socketdir(self) -> None:
        self.socketdir.mkdir(mode=0o700)
        if self._as_root:
            self._give_to_server(self.socketdir)

    def standby(self) -> PostgresServer:
        """A hot standby of this (running) server: a base backup that streams from it.

        Not started; `destroy()` it like any server."""
        replica = PostgresServer(self.user, self.password)
        self._run(
            "pg_basebackup",
            *("-D", str(replica.datadir), "-R", "-X", "stream", "--checkpoint=fast"),
            *("-h", self.host, "-p", str(self.port), "-U", self.user, "--no-sync"),
            timeout=120,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        replica._make_socketdir()
        replica._initialised = True
        return replica

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._initdb()
        options = (
            f"-p {self.port} -k {self.socketdir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        if self.tls is not None:
            cert, key = self._own(self.tls.cert), self._own(self.tls.key)
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def _own(self, path: Path) -> Path:
        """A copy of `path` in the server's directory that only the server's user reads."""
        copy = self.base / path.name
        shutil.copyfile(path, copy)
        copy.chmod(0o600)
        if self._as_root:
            self._give_to_server(copy)
        return copy

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    # -- connection details ----------------------------------------------
    def dsn_for(self, dbname: str) -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """PG* variables a libpq client (and the service) reads."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": dbname,
        }

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through the unix socket; returns unaligned, tuples-only output."""
        argv = [
            str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socketdir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            dbname,
            "-c",
            sql,
        ]
        if self._as_root:
            argv = ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database `name` (dropping an old one of that name); return its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
