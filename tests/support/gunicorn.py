"""The service under real gunicorn, as the container runs it (app/gunicorn.conf.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "app"
GUNICORN_CONF = APP_DIR / "gunicorn.conf.py"

# Variables of the calling environment that must not leak into the service's own
# configuration (the caller passes the database settings it means).
_SCRUBBED = (
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSWORD_FILE",
    "PGDATABASE",
    "PGSERVICE",
    "PROMETHEUS_MULTIPROC_DIR",
    "WEBAPP_ADMIN_PORT",
)


class GunicornServer:
    """gunicorn serving `app` on a free loopback port with its own metrics directory."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        workers: int = 2,
        app: str = "webapp.wsgi:app",
        threads: int = 2,
        ready_path: str = "/healthz",
        admin_port: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The second port of app/webapp/adminport.py, as the Deployment sets it.
        self.admin_port = free_port() if admin_port else None
        self.admin_url = f"http://127.0.0.1:{self.admin_port}" if admin_port else None
        self.workers = workers
        self.app = app
        self.ready_path = ready_path
        self.base = Path(tempfile.mkdtemp(prefix="gunicorn-test-"))
        self.metrics_dir = self.base / "prometheus"
        self.logfile = self.base / "gunicorn.log"
        base_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        pythonpath = os.pathsep.join(p for p in (str(APP_DIR), os.environ.get("PYTHONPATH")) if p)
        self.env = {
            **base_env,
            "PYTHONPATH": pythonpath,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": str(threads),
            # Tests stop servers often; idle keep-alive clients must not hold that up.
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
            **({"WEBAPP_ADMIN_PORT": str(self.admin_port)} if self.admin_port else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GunicornServer:
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), self.app],
                cwd=APP_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.log()[-6000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as resp:  # noqa: S310 -- http on loopback
                    # One worker answering is not enough: tests count on all of them.
                    if resp.status == 200 and len(self.worker_pids()) >= self.workers:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"gunicorn not ready after {timeout}s:\n{self.log()[-6000:]}")

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the gunicorn master)."""
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
