"""PostgreSQL access: a small thread-safe connection pool that survives database restarts.

Connections are opened lazily, so the service starts (and answers /healthz) while
the database is down. A connection that the server closed (restart, failover,
idle timeout) is dropped from the pool; if it broke before the first statement of
a transaction ran, the work is retried once on a fresh connection, so the first
request after a database restart does not fail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from webapp.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
Cursor = psycopg2.extras.RealDictCursor


class DatabaseUnavailable(Exception):
    """The database cannot be reached (or timed out); the request gets a 503."""


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.pool_max)

    def _connect(self) -> psycopg2.extensions.connection:
        try:
            conn = psycopg2.connect(
                self._settings.dsn,
                connect_timeout=self._settings.connect_timeout_s,
                application_name="webapp",
                options=f"-c statement_timeout={self._settings.statement_timeout_ms}",
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg2.OperationalError as exc:
            # libpq's message names host and user, never the password.
            log.warning(
                "database connection failed",
                extra={"db": self._settings.db_target, "reason": str(exc).strip()},
            )
            raise DatabaseUnavailable("cannot connect to the database") from exc
        conn.set_session(isolation_level="READ COMMITTED")
        return conn

    def _take(self) -> tuple[psycopg2.extensions.connection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        return self._connect(), False

    def _give_back(self, conn: psycopg2.extensions.connection) -> None:
        if (
            conn.closed
            or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        ):
            self._discard(conn)
            return
        with self._lock:
            self._idle.append(conn)

    @staticmethod
    def _discard(conn: psycopg2.extensions.connection) -> None:
        with contextlib.suppress(psycopg2.Error):
            conn.close()

    def run(self, work: Callable[[Cursor], T]) -> T:
        """Run `work(cursor)` in one transaction and commit; return its result."""
        if not self._slots.acquire(timeout=self._settings.connect_timeout_s):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            for attempt in (1, 2):
                conn, reused = self._take()
                cursor: _FirstStatementCursor | None = None
                try:
                    with conn.cursor(cursor_factory=Cursor) as cur:
                        cursor = _FirstStatementCursor(cur)
                        result = work(cursor)  # type: ignore[arg-type]
                    conn.commit()
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    broken = bool(conn.closed)
                    self._discard(conn)
                    retryable = cursor is None or cursor.failed_on_first
                    if broken and reused and attempt == 1 and retryable:
                        log.info("database connection was closed by the server; reconnecting")
                        continue
                    raise DatabaseUnavailable(_reason(exc)) from exc
                except BaseException:
                    if not conn.closed:
                        conn.rollback()
                    self._give_back(conn)
                    raise
                self._give_back(conn)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless a round trip to the database succeeds."""
        self.run(lambda cur: cur.execute("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)


def _reason(exc: psycopg2.Error) -> str:
    if isinstance(exc, psycopg2.extensions.QueryCanceledError):
        return "the database did not answer in time"
    return "the database connection failed"


class _FirstStatementCursor:
    """Marks an error raised by the first statement, which is safe to retry elsewhere."""

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur
        self._statements = 0
        self.failed_on_first = False

    def execute(self, query: str, params: object = None) -> None:
        self._statements += 1
        try:
            self._cur.execute(query, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.failed_on_first = self._statements == 1
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._cur, name)
