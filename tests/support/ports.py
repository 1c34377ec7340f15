"""Free TCP ports on the loopback interface, and waiting for servers on them."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port_closed(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until nothing accepts connections on `port` any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) != 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {host}:{port} still open after {timeout}s")


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers 200 (a Prometheus-style /-/ready) while `process` lives."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited before {url} was ready")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")
