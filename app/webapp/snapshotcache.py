"""Query results kept by each worker with the database snapshot they were read in.

A read's result is a function of the rows its snapshot sees, and PostgreSQL's
snapshot (`pg_current_snapshot()`: the oldest transaction still running, the next
one to start, and those in progress between) changes whenever a transaction that
wrote anything commits or aborts. A result read under the snapshot the database
has now is therefore still exact. The statements that use this cache take the
snapshot of the result the worker holds and, when it is still the current one,
answer no row without reading the table, in the round trip that would otherwise
fetch the result: every request still asks the database, so a write that any
process (another worker, another pod, psql) committed before the request is seen.

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

# The database's snapshot and start time, compared with the snapshot the caller holds
# to answer no row when it is unchanged. Only stable functions: PostgreSQL tests a
# condition on it once, before the scan; one volatile function (pg_is_in_recovery) would
# make it test the condition after reading the table, on every request.
SNAPSHOT_SQL = (
    "pg_current_snapshot()::text || '@' || extract(epoch FROM pg_postmaster_start_time())"
)
# What a statement selects as its first column, the snapshot a result is kept with. NULL
# on a standby: there the snapshot does not list the transactions in progress, so it
# cannot tell a change, and nothing is kept (a snapshot held from a primary never equals
# a standby's: the start times differ).
SNAPSHOT_COLUMN_SQL = f"CASE WHEN NOT pg_is_in_recovery() THEN {SNAPSHOT_SQL} END"


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
