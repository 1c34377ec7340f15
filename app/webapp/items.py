"""Items: validation and storage, shared by the JSON API and the HTML page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from webapp.db import Cursor, Database
from webapp.errors import APIError

NAME_MAX = 100
DESCRIPTION_MAX = 1000
LIMIT_DEFAULT = 20
LIMIT_MAX = 100
OFFSET_MAX = 1_000_000
ID_MAX = 2**63 - 1  # bigint
_FIELDS = {"name", "description"}
# Whole statements, never assembled from strings: values always travel as parameters.
_LIST_OLDEST_FIRST = (
    "SELECT id, name, description, created_at, updated_at FROM items "
    "ORDER BY id ASC LIMIT %s OFFSET %s"
)
_LIST_NEWEST_FIRST = (
    "SELECT id, name, description, created_at, updated_at FROM items "
    "ORDER BY id DESC LIMIT %s OFFSET %s"
)
_GET = "SELECT id, name, description, created_at, updated_at FROM items WHERE id = %s"
_INSERT = (
    "INSERT INTO items (name, description) VALUES (%s, %s) "
    "RETURNING id, name, description, created_at, updated_at"
)
_UPDATE = (
    "UPDATE items SET name = %s, description = %s, updated_at = now() "
    "WHERE id = %s RETURNING id, name, description, created_at, updated_at"
)
_DELETE = "DELETE FROM items WHERE id = %s"


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


def to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    created: datetime = row["created_at"]
    updated: datetime = row["updated_at"]
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
    }


class ItemStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, limit: int, offset: int, newest_first: bool = False) -> list[dict[str, Any]]:
        query = _LIST_NEWEST_FIRST if newest_first else _LIST_OLDEST_FIRST

        def work(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(query, (limit, offset))
            return [to_json(row) for row in cur.fetchall()]

        return self.db.run(work)

    def get(self, item_id: int) -> dict[str, Any] | None:
        def work(cur: Cursor) -> dict[str, Any] | None:
            cur.execute(_GET, (item_id,))
            row = cur.fetchone()
            return to_json(row) if row else None

        return self.db.run(work)

    def create(self, fields: Mapping[str, str]) -> dict[str, Any]:
        def work(cur: Cursor) -> dict[str, Any]:
            cur.execute(_INSERT, (fields["name"], fields["description"]))
            return to_json(cur.fetchone())

        return self.db.run(work)

    def replace(self, item_id: int, fields: Mapping[str, str]) -> dict[str, Any] | None:
        def work(cur: Cursor) -> dict[str, Any] | None:
            cur.execute(_UPDATE, (fields["name"], fields["description"], item_id))
            row = cur.fetchone()
            return to_json(row) if row else None

        return self.db.run(work)

    def delete(self, item_id: int) -> bool:
        def work(cur: Cursor) -> bool:
            cur.execute(_DELETE, (item_id,))
            return cur.rowcount == 1

        return self.db.run(work)
