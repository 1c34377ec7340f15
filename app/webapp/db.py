"""PostgreSQL access: a small thread-safe connection pool that survives database restarts.

Connections are opened lazily, so the service starts (and answers /healthz) while
the database is down. Each statement commits on its own (autocommit): every unit of
work the service does is one statement, and a transaction around it would cost two
more round trips (BEGIN, COMMIT). Work that needs several statements to be atomic
must say so in SQL (one statement with CTEs).

A connection that the server closed (a restart, an idle timeout, a failover that
shuts the old server down) has a readable socket (the termination notice, then end
of file): a write drops it when taking it from the pool, without a round trip, so the
first request after a database restart does not fail. Read-only work skips that check
(a system call per request) and, when it meets a broken connection, is retried once on
a checked or fresh one; a write is not retried, because it may have been committed
before the connection broke. A server that vanished without closing its connections
is found by TCP keepalives (about a minute).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions

from webapp.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Statement:
    """A statement the server parses and plans once per connection (PREPARE), not per use."""

    def __init__(self, name: str, sql: str, params: int) -> None:
        self.name = name
        self.prepare = f"PREPARE {name} AS {sql}"
        self.execute = (
            f"EXECUTE {name} ({', '.join(['%s'] * params)})" if params else f"EXECUTE {name}"
        )


class _Connection(psycopg2.extensions.connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


class Cursor(psycopg2.extensions.cursor):
    connection: _Connection

    def run(self, statement: Statement, params: Sequence[object] = ()) -> None:
        """Execute a prepared statement, preparing it on first use on this connection."""
        if statement.name not in self.connection.prepared:
            self.execute(statement.prepare)
            self.connection.prepared.add(statement.name)
        self.execute(statement.execute, params)


class DatabaseUnavailable(Exception):
    """The database cannot be reached (or timed out); the request gets a 503."""


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.pool_max)
        # Connections opened so far. While it stays the same, every connection in use was
        # open before, so each is still to the same server incarnation (one that crashed
        # or restarted broke them all): webapp.items relies on it to reuse a page.
        self.opened = 0

    def _connect(self) -> _Connection:
        try:
            conn = psycopg2.connect(
                self._settings.dsn,
                connection_factory=_Connection,
                cursor_factory=Cursor,
                connect_timeout=self._settings.connect_timeout_s,
                application_name="webapp",
                # UTC: the items' timestamps leave as ISO 8601 text written by the server.
                # Generic plans: each prepared statement is an index lookup or range
                # whose generic plan is the custom one (the page function's query keeps
                # both of its branches, each behind a parameter tested once); left to
                # choose, PostgreSQL keeps planning every execution again (the custom
                # plans look cheaper).
                options=(
                    f"-c statement_timeout={self._settings.statement_timeout_ms} -c TimeZone=UTC"
                    " -c plan_cache_mode=force_generic_plan"
                ),
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
        conn.autocommit = True
        with self._lock:
            self.opened += 1
        return conn

    def _take(self, check: bool) -> tuple[_Connection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and not (check and _hung_up(conn)):
                    return conn, True
                self._discard(conn)
        return self._connect(), False

    def _give_back(self, conn: _Connection) -> None:
        if (
            conn.closed
            or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        ):
            self._discard(conn)
            return
        with self._lock:
            self._idle.append(conn)

    @staticmethod
    def _discard(conn: _Connection) -> None:
        with contextlib.suppress(psycopg2.Error):
            conn.close()

    def run(self, work: Callable[[Cursor], T], *, idempotent: bool = False) -> T:
        """Return `work(cursor)`; `idempotent` work may run twice if a connection breaks."""
        if not self._slots.acquire(timeout=self._settings.connect_timeout_s):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            for attempt in (1, 2):
                conn, reused = self._take(check=not idempotent or attempt > 1)
                try:
                    with conn.cursor() as cur:
                        result = work(cur)
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    broken = bool(conn.closed)
                    self._discard(conn)
                    if broken and reused and attempt == 1 and idempotent:
                        log.info("database connection was closed by the server; reconnecting")
                        continue
                    raise DatabaseUnavailable(_reason(exc)) from exc
                except BaseException:
                    self._give_back(conn)
                    raise
                self._give_back(conn)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)


def _reason(exc: psycopg2.Error) -> str:
    if isinstance(exc, psycopg2.extensions.QueryCanceledError):
        return "the database did not answer in time"
    return "the database connection failed"


def _hung_up(conn: _Connection) -> bool:
    """An idle connection has nothing to read unless the server has closed it."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))
