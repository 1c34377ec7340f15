"""Query results kept by each worker with the database snapshot they were read in.

A read's result is a function of the rows its snapshot sees, and PostgreSQL's
snapshot (`pg_current_snapshot()`: the oldest transaction still running, the next
one to start, and those in progress between) changes whenever a transaction that
wrote anything commits or aborts. A result read under the snapshot the database
has now is therefore still exact. The database function that reads a page
(items_page, migration 0003) takes the snapshot of the page the worker holds and,
when it is still the current one, answers no row without reading the table, in the
round trip that would otherwise fetch the page: every request still asks the
database, so a write that any process (another worker, another pod, psql) committed
before the request is seen.

The snapshot is read together with the server's start time: a restarted, restored
or failed-over server may hand out the same transaction numbers again (and one that
crashed and recovered keeps its start time: webapp.items reuses a page only while no
connection was opened since). Exact on a primary; a standby answers no snapshot, and
nothing read there is kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SnapshotCache(Generic[V]):
    """Least recently used results, within a budget of bytes; safe across threads."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._used = 0
        self._entries: OrderedDict[Hashable, tuple[str, V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[str, V] | None:
        """The snapshot and result kept for `key`, if any."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        return entry[0], entry[1]

    def put(self, key: Hashable, snapshot: str, value: V, size: int) -> None:
        """Keep `value` (about `size` bytes) as read under `snapshot`, evicting the oldest."""
        if size > self.budget_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old[2]
            self._entries[key] = (snapshot, value, size)
            self._used += size
            while self._used > self.budget_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self._used -= evicted

    def __len__(self) -> int:
        return len(self._entries)
