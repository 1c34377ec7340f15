"""JSON API: /api/v1/items (list, get, create, replace, delete)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from webapp import items
from webapp.errors import APIError
from webapp.items import ItemStore

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _store() -> ItemStore:
    return current_app.extensions["webapp.items"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise APIError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    data = request.get_data(cache=False)  # raises 413 when Content-Length is above the limit
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(data) >= limit:
        # A chunked body is cut at the limit rather than refused: refuse it here.
        raise APIError(413, "request_entity_too_large", f"the body is larger than {limit} bytes")
    if not data:
        raise APIError(400, "malformed_json", "the body is empty")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "the body is not valid JSON"
        raise APIError(400, "malformed_json", f"the body is not valid JSON: {detail}") from None


def _not_found(raw: object) -> APIError:
    return APIError(404, "not_found", f"no item with id {raw}")


@bp.get("/items")
def list_items() -> Response:
    limit = items.parse_int(
        request.args.get("limit"), "limit", items.LIMIT_DEFAULT, 1, items.LIMIT_MAX
    )
    offset = items.parse_int(request.args.get("offset"), "offset", 0, 0, items.OFFSET_MAX)
    # One row more than asked tells whether a next page exists without a COUNT(*).
    rows = _store().list(limit + 1, offset)
    has_more = len(rows) > limit
    return jsonify(
        items=rows[:limit],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if has_more else None,
    )


@bp.post("/items")
def create_item() -> tuple[Response, int, dict[str, str]]:
    fields = items.validate(_json_body())
    item = _store().create(fields)
    location = url_for("api.get_item", item_id=item["id"])
    return jsonify(item), 201, {"Location": location}


@bp.get("/items/<item_id>")
def get_item(item_id: str) -> Response:
    item = _store().get(items.parse_id(item_id))
    if item is None:
        raise _not_found(item_id)
    return jsonify(item)


@bp.put("/items/<item_id>")
def replace_item(item_id: str) -> Response:
    ident = items.parse_id(item_id)
    fields = items.validate(_json_body())
    item = _store().replace(ident, fields)
    if item is None:
        raise _not_found(item_id)
    return jsonify(item)


@bp.delete("/items/<item_id>")
def delete_item(item_id: str) -> tuple[str, int]:
    if not _store().delete(items.parse_id(item_id)):
        raise _not_found(item_id)
    return "", 204
