"""Steady HTTP load from a few threads, counting what failed, for disruption tests.

Only for addresses the tests made (loopback or the lab's containers). Each request opens
its own connection, as a browser or a client behind a load balancer would, so the pace is
capped (`rate` requests a second in all): every closed connection holds its local port for a
minute (TIME_WAIT), and unpaced threads against a fast endpoint use up the 28,000 ports the
kernel has for one address, failing with "Cannot assign requested address" — the load's own
failure, not the service's. The load stops when the `with` block ends or after
`max_seconds`, whichever comes first.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from types import TracebackType


class SteadyLoad:
    def __init__(
        self,
        url: str,
        threads: int = 4,
        rate: float = 100,
        timeout: float = 3,
        max_seconds: float = 900,
    ) -> None:
        self.url, self.timeout, self.max_seconds = url, timeout, max_seconds
        self._interval = threads / rate
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            if time.monotonic() >= deadline:
                break
            next_at = max(next_at + self._interval, time.monotonic() - self._interval)
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:  # noqa: S310 - our own test address
                    resp.read()
                    failure = None if resp.status == 200 else f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                failure = f"HTTP {exc.code}"
            except Exception as exc:  # every way a request can fail counts
                failure = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(failure)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def summary(self) -> str:
        return f"{self.ok} ok, {len(self.failures)} failed: {self.failures[:5]}"
