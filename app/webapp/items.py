"""Items: validation and storage, shared by the JSON API and the HTML page.

An item's JSON is written by PostgreSQL when the row is written (the `doc` column,
kept by a trigger), so a page of 100 items costs one text value in Python, not 100 row
objects, 200 datetime conversions and a JSON encoding, and the database only joins
stored text. Lists page by keyset (`WHERE id > last seen`) on the
primary key's index: the last page of a large table costs what the first one does.
A page a worker has read is kept with the snapshot it was read in and served again,
after one round trip, while the database's snapshot is unchanged (webapp.snapshotcache).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webapp.db import Cursor, Database, Statement
from webapp.errors import APIError
from webapp.metrics import ITEM_PAGES
from webapp.snapshotcache import SnapshotCache

NAME_MAX = 100
DESCRIPTION_MAX = 1000
LIMIT_DEFAULT = 20
LIMIT_MAX = 100
OFFSET_MAX = 1_000_000
ID_MAX = 2**63 - 1  # bigint
_FIELDS = {"name", "description"}
_CURSOR_PREFIX = "i"
CURSOR_PATTERN = re.compile(r"i[0-9a-f]{1,16}")
# A cached page's memory beyond its JSON text and snapshot: the key and the objects.
_PAGE_OVERHEAD_BYTES = 512
_PAGES_FROM_CACHE = ITEM_PAGES.labels("cache")
_PAGES_FROM_TABLE = ITEM_PAGES.labels("table")


# Whole statements, never assembled from request data: values travel as parameters.
# Each row keeps its item's JSON in `doc` (migration 0002: a trigger writes it).
# A page is one row of the function items_page (migration 0003: what it answers, and why a
# function); its last parameter is the snapshot of the copy the worker holds, if any.
_PAGE = Statement(
    "items_page",
    "SELECT snapshot, items, first_id, last_id, has_lower, has_higher"
    " FROM items_page($1::boolean, $2::bigint, $3::integer, $4::integer, $5::text)",
    params=5,
)
_GET = Statement("items_get", "SELECT id, doc FROM items WHERE id = $1", params=1)
_INSERT = Statement(
    "items_insert",
    "INSERT INTO items (name, description) VALUES ($1, $2) RETURNING id, doc",
    params=2,
)
_UPDATE = Statement(
    "items_update",
    "UPDATE items SET name = $1, description = $2, updated_at = now() WHERE id = $3"
    " RETURNING id, doc",
    params=3,
)
_DELETE = Statement("items_delete", "DELETE FROM items WHERE id = $1", params=1)


@dataclass(frozen=True)
class Page:
    items_json: str  # a JSON array of items, oldest or newest first as asked
    first_id: int | None  # lowest id on the page
    last_id: int | None  # highest id on the page
    has_lower: bool  # items below the page exist
    has_higher: bool  # items above the page exist

    def items(self) -> list[dict[str, Any]]:
        return json.loads(self.items_json)


@dataclass(frozen=True)
class Item:
    id: int
    json: str


def _text(payload: Mapping[str, Any], field: str, maximum: int, required: bool) -> str:
    if field not in payload:
        if required:
            raise APIError(400, "validation_error", f"'{field}' is required")
        return ""
    value = payload[field]
    if not isinstance(value, str):
        raise APIError(400, "validation_error", f"'{field}' must be a string")
    if len(value) > maximum:
        raise APIError(
            400,
            "validation_error",
            f"'{field}' is {len(value)} characters long; the most is {maximum}",
        )
    if "\x00" in value:
        raise APIError(400, "validation_error", f"'{field}' must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, "validation_error", f"'{field}' is not valid Unicode text") from None
    if required and not value.strip():
        raise APIError(400, "validation_error", f"'{field}' must not be blank")
    return value


def validate(payload: Any) -> dict[str, str]:
    """Check a create/replace body; return the clean fields or raise a 400 APIError."""
    if not isinstance(payload, dict):
        raise APIError(400, "validation_error", "the body must be a JSON object")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise APIError(400, "validation_error", f"unknown field(s): {', '.join(unknown)}")
    return {
        "name": _text(payload, "name", NAME_MAX, required=True),
        "description": _text(payload, "description", DESCRIPTION_MAX, required=False),
    }


def parse_id(raw: str) -> int:
    """Turn a path segment into an item id; anything that cannot be an id is a 404."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= ID_MAX:
        raise APIError(404, "not_found", f"no item with id {raw[:40]!r}")
    return int(raw)


def parse_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 12:
        raise APIError(400, "invalid_parameter", f"'{name}' must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise APIError(400, "invalid_parameter", f"'{name}' must be between {low} and {high}")
    return value


def encode_cursor(item_id: int) -> str:
    """A page cursor. Clients treat it as opaque: they pass back what `next` gave them."""
    return f"{_CURSOR_PREFIX}{item_id:x}"


def decode_cursor(raw: str, name: str) -> int:
    """The id a cursor stands for; one past the last possible id is simply the end."""
    if not CURSOR_PATTERN.fullmatch(raw):
        raise APIError(
            400, "invalid_parameter", f"'{name}' must be a cursor that this service returned"
        )
    return min(int(raw[len(_CURSOR_PREFIX) :], 16), ID_MAX)


def _item(cur: Cursor) -> Item | None:
    row = cur.fetchone()
    return Item(*row) if row else None


class ItemStore:
    def __init__(self, db: Database, pages: SnapshotCache[Page]) -> None:
        self.db = db
        self.pages = pages

    def _read(self, params: tuple[Any, ...], held: str | None) -> Any:
        def work(cur: Cursor) -> tuple[Any, ...] | None:
            cur.run(_PAGE, (*params, held))
            return cur.fetchone()

        return self.db.run(work, idempotent=True)

    def _page(self, params: tuple[Any, ...]) -> Page:
        # A page is reused only on the connections it was read beside: a server that
        # crashed and recovered keeps its start time and may count transactions again
        # from where it did, so its snapshots can repeat; but it broke every connection.
        opened = self.db.opened
        key = (opened, *params)
        held = self.pages.get(key)
        row = self._read(params, held[0] if held else None)
        same_connections = self.db.opened == opened
        if row is None:  # the held page's snapshot is still the database's
            if held is not None and same_connections:
                _PAGES_FROM_CACHE.inc()
                return held[1]
            row = self._read(params, None)
        _PAGES_FROM_TABLE.inc()
        page = Page(*row[1:])
        if row[0] is not None and same_connections:
            size = sys.getsizeof(page.items_json) + len(row[0]) + _PAGE_OVERHEAD_BYTES
            self.pages.put(key, row[0], page, size)
        return page

    def oldest(self, limit: int, after_id: int = 0, offset: int = 0) -> Page:
        """Items with an id above `after_id`, oldest first, skipping `offset` of them.

        The API's keyset page; a non-zero offset (deprecated) costs a scan of the
        rows it skips.
        """
        return self._page((False, after_id, limit, offset))

    def newest(self, limit: int, before_id: int | None = None) -> Page:
        """Items below `before_id` (or the newest ones), newest first: the HTML page."""
        through = ID_MAX if before_id is None else before_id - 1
        return self._page((True, through, limit, 0))

    def get(self, item_id: int) -> Item | None:
        def work(cur: Cursor) -> Item | None:
            cur.run(_GET, (item_id,))
            return _item(cur)

        return self.db.run(work, idempotent=True)

    def create(self, fields: Mapping[str, str]) -> Item:
        def work(cur: Cursor) -> Item:
            cur.run(_INSERT, (fields["name"], fields["description"]))
            return Item(*cur.fetchone())  # INSERT ... RETURNING always gives its row

        return self.db.run(work)

    def replace(self, item_id: int, fields: Mapping[str, str]) -> Item | None:
        def work(cur: Cursor) -> Item | None:
            cur.run(_UPDATE, (fields["name"], fields["description"], item_id))
            return _item(cur)

        return self.db.run(work)

    def delete(self, item_id: int) -> bool:
        def work(cur: Cursor) -> bool:
            cur.run(_DELETE, (item_id,))
            return cur.rowcount == 1

        return self.db.run(work)
