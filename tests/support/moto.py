"""A real `moto_server` process on the loopback interface, shared by the AWS tests and the lab."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

try:
    from tests.support.ports import free_port
except ImportError:  # pragma: no cover - only when the helper is used outside the repository
    import socket

    def free_port(host: str = "127.0.0.1") -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])


def _moto_server_binary() -> str:
    """Prefer the script next to the running interpreter so the venv's moto is used."""
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if not found:
        raise FileNotFoundError("moto_server not found: install moto[server]")
    return found


class MotoServer:
    """Run `moto_server -H 127.0.0.1 -p PORT` until `stop()`.

    moto answers every AWS API on one port; `reset()` empties its state between scenarios.
    Its Elastic IPs and instance addresses are made up: never send traffic to them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint_url = f"http://{host}:{self.port}"
        self._log_path = log_path
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    def start(self) -> MotoServer:
        if self._process is not None:
            return self
        out = subprocess.DEVNULL
        if self._log_path is not None:
            self._log_file = self._log_path.open("ab")
            out = self._log_file
        self._process = subprocess.Popen(
            [_moto_server_binary(), "-H", self.host, "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self._process.returncode}")
            try:
                # The URL is always http://127.0.0.1:<port> built above, never user input.
                url = f"{self.endpoint_url}/moto-api/data.json"
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"moto_server did not answer on {self.endpoint_url}")

    def reset(self) -> None:
        """Forget every resource moto holds (its reset API), keeping the process."""
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - own http loopback URL
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - same URL
            if response.status != 200:
                raise RuntimeError(f"moto reset answered {response.status}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment for a child process (ansible-playbook, boto3) that must talk only to moto."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
        }

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
