"""Configuration, read only from environment variables and secret files.

The database is given either as `DATABASE_URL` or as libpq's `PG*` variables
(`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, and `PGPASSWORD` or
`PGPASSWORD_FILE`, e.g. a Kubernetes secret mounted under /run/secrets/).
Values are checked at start-up; a missing or malformed value stops the process
with a message that names the variable but never prints a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2.extensions

from webapp.writer_keys import WriterKey


class ConfigError(Exception):
    """Configuration is missing or wrong; the message is safe to log."""


@dataclass(frozen=True)
class Settings:
    """What `load` read; its defaults are there, beside each variable's name and bounds."""

    dsn: str = field(repr=False)
    db_target: str  # host:port/dbname, for log lines (no user, no password)
    pool_min: int
    pool_max: int
    statement_timeout_ms: int
    connect_timeout_s: int
    cookie_secure: bool
    log_level: str
    max_body_bytes: int
    admin_port: int | None
    page_cache_bytes: int
    # Keys derived from the write credentials; None: writes are open (webapp.writers).
    writer_keys: tuple[WriterKey, ...] | None = field(repr=False)


WRITER_CREDENTIAL_MIN_LENGTH = 32
# Printable ASCII without spaces: what a header, a form and a shell all carry unchanged.
WRITER_CREDENTIAL = re.compile(f"[!-~]{{{WRITER_CREDENTIAL_MIN_LENGTH},}}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _read_secret_file(name: str, path: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{name} points to {path}, which does not exist") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{name} points to {path}, which cannot be read: {exc.strerror or exc}"
        ) from None
    if not value:
        raise ConfigError(f"{name} points to {path}, which is empty")
    return value


def _writer_keys(env: Mapping[str, str]) -> tuple[WriterKey, ...] | None:
    path = env.get("WEBAPP_WRITERS_FILE", "")
    if not path:
        return None
    lines = [line.strip() for line in _read_secret_file("WEBAPP_WRITERS_FILE", path).splitlines()]
    credentials = [line for line in lines if line]
    for number, credential in enumerate(credentials, 1):
        if len(credential) < WRITER_CREDENTIAL_MIN_LENGTH:
            raise ConfigError(
                f"WEBAPP_WRITERS_FILE: credential {number} is shorter than "
                f"{WRITER_CREDENTIAL_MIN_LENGTH} characters"
            )
        if not WRITER_CREDENTIAL.fullmatch(credential):
            raise ConfigError(
                f"WEBAPP_WRITERS_FILE: credential {number} has a character that is not "
                "printable ASCII (or a space)"
            )
    return tuple(WriterKey.of(c) for c in credentials)


def _database(env: Mapping[str, str]) -> tuple[str, str]:
    """Return (dsn, target) from DATABASE_URL or the PG* variables."""
    url = env.get("DATABASE_URL", "").strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql"}:
            raise ConfigError("DATABASE_URL must start with postgresql:// (or postgres://)")
        try:
            params = psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError:
            raise ConfigError("DATABASE_URL is not a valid PostgreSQL URL") from None
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("DATABASE_URL has an invalid port") from None
        if not params.get("host") and not env.get("PGHOST"):
            raise ConfigError("DATABASE_URL names no host")
        if "password" not in params and env.get("PGPASSWORD_FILE"):
            params["password"] = _read_secret_file("PGPASSWORD_FILE", env["PGPASSWORD_FILE"])
        dbname = params.get("dbname", "")
        target = f"{params.get('host', env.get('PGHOST'))}:{port or 5432}/{dbname}"
        params |= _tls(env, params)
        return psycopg2.extensions.make_dsn(**params), target

    missing = [name for name in ("PGHOST", "PGUSER", "PGDATABASE") if not env.get(name)]
    if missing:
        raise ConfigError(
            "no database configured: set DATABASE_URL, or PGHOST, PGUSER, PGDATABASE "
            f"(and PGPASSWORD or PGPASSWORD_FILE); missing: {', '.join(missing)}"
        )
    port = _int(env, "PGPORT", 5432, 1, 65535)
    params: dict[str, str | int] = {
        "host": env["PGHOST"],
        "port": port,
        "user": env["PGUSER"],
        "dbname": env["PGDATABASE"],
    }
    if env.get("PGPASSWORD_FILE"):
        params["password"] = _read_secret_file("PGPASSWORD_FILE", env["PGPASSWORD_FILE"])
    elif env.get("PGPASSWORD"):
        params["password"] = env["PGPASSWORD"]
    params |= _tls(env)
    return psycopg2.extensions.make_dsn(**params), f"{env['PGHOST']}:{port}/{env['PGDATABASE']}"


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _tls(env: Mapping[str, str], url: Mapping[str, str] | None = None) -> dict[str, str]:
    """sslmode and sslrootcert, checked here so that a wrong one stops the start, not a request.

    From DATABASE_URL's parameters when it has them, else from PGSSLMODE and PGSSLROOTCERT.
    sslrootcert=system (libpq 16 or later) trusts the operating system's CAs.
    """
    url = url or {}
    params: dict[str, str] = {}
    mode_name = "DATABASE_URL's sslmode" if "sslmode" in url else "PGSSLMODE"
    root_name = "DATABASE_URL's sslrootcert" if "sslrootcert" in url else "PGSSLROOTCERT"
    mode = url.get("sslmode") or env.get("PGSSLMODE", "")
    if mode:
        if mode not in SSLMODES:
            raise ConfigError(f"{mode_name} must be one of {', '.join(SSLMODES)}, got {mode!r}")
        params["sslmode"] = mode
    root = url.get("sslrootcert") or env.get("PGSSLROOTCERT", "")
    if root:
        if root != "system" and not Path(root).is_file():
            raise ConfigError(f"{root_name} points to {root}, which is not a file")
        if root == "system" and mode not in {"", "verify-full"}:
            raise ConfigError(f"{root_name}=system needs sslmode verify-full, got {mode!r}")
        params["sslrootcert"] = root
    elif mode.startswith("verify-"):
        raise ConfigError(
            f"{mode_name}={mode} needs PGSSLROOTCERT (or sslrootcert), the CA bundle to check "
            "the server with, or system for the operating system's"
        )
    return params


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check the whole configuration; raise ConfigError on the first problem."""
    env = os.environ if env is None else env
    dsn, target = _database(env)
    pool_max = _int(env, "WEBAPP_DB_POOL_MAX", 8, 1, 100)
    level = env.get("WEBAPP_LOG_LEVEL", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"WEBAPP_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return Settings(
        dsn=dsn,
        db_target=target,
        pool_min=min(_int(env, "WEBAPP_DB_POOL_MIN", 1, 0, 100), pool_max),
        pool_max=pool_max,
        statement_timeout_ms=_int(env, "WEBAPP_DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
        connect_timeout_s=_int(env, "WEBAPP_DB_CONNECT_TIMEOUT", 3, 1, 60),
        cookie_secure=_bool(env, "WEBAPP_COOKIE_SECURE", False),
        log_level=level,
        max_body_bytes=_int(env, "WEBAPP_MAX_BODY_BYTES", 16 * 1024, 1024, 10 * 1024 * 1024),
        admin_port=_int(env, "WEBAPP_ADMIN_PORT", 0, 1, 65535) or None,
        page_cache_bytes=_int(env, "WEBAPP_PAGE_CACHE_BYTES", 4 * 1024 * 1024, 0, 1024**3),
        writer_keys=_writer_keys(env),
    )
