"""gunicorn settings for the service, all overridable from the environment.

gunicorn loads this file in the master before any worker imports the app, so it
must not import prometheus_client at module level: the library picks its
multiprocess mode from PROMETHEUS_MULTIPROC_DIR when first imported.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gunicorn import glogging, util


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {raw!r}") from None


# The container and the Kubernetes manifest set this; a bare `gunicorn` run on a
# workstation gets a private directory instead of silently wrong metrics.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="webapp-prometheus-")

_public = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")  # the container port
# The admin port, for the kubelet and Prometheus only (webapp/adminport.py says what it serves).
_admin_port = _env_int("WEBAPP_ADMIN_PORT", 0)
if _admin_port and _public.startswith(("unix:", "fd://")):
    # The admin port listens on the public bind's host: a socket has none.
    raise SystemExit(
        f"gunicorn.conf.py: WEBAPP_ADMIN_PORT needs GUNICORN_BIND as HOST:PORT, not {_public}"
    )
if _admin_port and _public.rpartition(":")[2] == str(_admin_port):
    raise SystemExit(f"gunicorn.conf.py: WEBAPP_ADMIN_PORT must differ from the port of {_public}")
bind = [_public] + ([f"{_public.rpartition(':')[0]}:{_admin_port}"] if _admin_port else [])
workers = _env_int("GUNICORN_WORKERS", 2)
threads = _env_int("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# With the preStop pause, below the pod's terminationGracePeriodSeconds (tests/contract checks
# the sum against the manifest) so in-flight requests finish.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
# A listening socket per worker (SO_REUSEPORT), so the kernel spreads new connections over
# the workers. On one shared socket the worker that wakes first takes nearly all of a
# client's keep-alive connections (a proxy's, a load generator's), and the other workers'
# cores idle: with wrk's 20 connections, 19 or 20 went to one of two workers. The kernel
# does not move a connection queued on a worker's socket to another, so the connections
# queued on a worker that stops alone are reset: not with recycled workers
# (GUNICORN_MAX_REQUESTS), where that happens by design, nor on a unix socket, which each
# worker would bind anew. A worker killed on timeout loses its queue either way.
reuse_port = max_requests == 0 and not _public.startswith(("unix:", "fd://"))
# The worker heartbeat files go to memory: the root filesystem may be read-only, and
# /dev/shm is a tmpfs private to the container (hence the two silenced temp-dir rules).
_SHM = "/dev/shm"  # noqa: S108  # nosec B108
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", _SHM)
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
limit_request_line = 4094
limit_request_fields = 100
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "1") != "0" else None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "webapp"
# gunicorn's runtime control socket would go to $HOME/.gunicorn/ (read-only in the
# container, and shared by every gunicorn of a user on a workstation); nothing uses it.
control_socket_disable = True


class JsonLogger(glogging.Logger):
    """Access and error logs as one JSON object per line (like the app's own logs)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(_JsonLineFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.syslog):
            return
        # From the end: the app's middleware adds X-Request-ID last, after a dozen others.
        request_id = next(
            (v for k, v in reversed(resp.headers) if k.lower() == "x-request-id"), None
        )
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": "gunicorn.access",
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": resp.status_code,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "request_id": request_id,
        }
        self.access_log.info(json.dumps(entry))


class _JsonLineFormatter(glogging.logging.Formatter):
    def format(self, record: glogging.logging.LogRecord) -> str:
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg  # already JSON (access lines)
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": "gunicorn",
            "msg": msg,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


logger_class = JsonLogger


def _refuse_taken_ports(server: Any) -> None:
    """With reuse_port the master binds nothing and each worker binds its own socket; a
    worker that cannot exits and is forked again, forever, while the master runs on. So
    the master tries each address first, without SO_REUSEPORT: a port another server holds
    is refused, even one that server shares (a second copy of this service would take
    half its connections)."""
    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a unix socket: gunicorn binds it in the master
            continue
        host, port = address[0], address[1]
        family = socket.AF_INET6 if util.is_ipv6(host) else socket.AF_INET  # as gunicorn picks
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn's own sockets do: a restart finds the port's closed connections
            # still in TIME_WAIT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise SystemExit(
                    f"gunicorn.conf.py: cannot listen on {host}:{port}: {exc.strerror}"
                ) from None


def on_starting(server: Any) -> None:
    """Refuse ports already taken; empty the metrics directory: files of a previous run
    would be summed in."""
    if server.cfg.reuse_port:
        _refuse_taken_ports(server)
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    server.log.info(f"prometheus multiprocess directory {directory} emptied")


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from /metrics (its counters stay summed in)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
