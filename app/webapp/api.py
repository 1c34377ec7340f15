"""JSON API: /api/v1/items (list, get, create, replace, delete)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from webapp import items, writers
from webapp.errors import APIError
from webapp.items import ItemStore

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# RFC 9745: `offset` has been deprecated since 2026-12-04T00:00:00Z.
OFFSET_DEPRECATED = "@1796342400"
bp.before_request(writers.require_bearer)


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
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    # Read from the server's stream, not through werkzeug's wrapper of it (about a tenth of a
    # create's Python time): with a Content-Length, that many bytes; without one (chunked),
    # one byte past the limit, from a server that ends the body itself (gunicorn does; the
    # wrapper reads nothing from others either).
    body = request.environ["wsgi.input"]
    # A body gunicorn cannot read (broken chunked framing, a client gone mid-body) raises
    # here and is a 400 in webapp.errors.
    if length is not None:
        data = body.read(length)
    elif request.environ.get("wsgi.input_terminated"):
        data = body.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
    else:
        data = b""
    if length is not None and len(data) < length:
        raise APIError(400, "malformed_json", "the body ended before it was complete")
    if not data:
        raise APIError(400, "malformed_json", "the body is empty")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "the body is not valid JSON"
        raise APIError(400, "malformed_json", f"the body is not valid JSON: {detail}") from None


def _too_large(limit: int) -> APIError:
    return APIError(413, "request_entity_too_large", f"the body is larger than {limit} bytes")


def _not_found(raw: object) -> APIError:
    return APIError(404, "not_found", f"no item with id {raw}")


def _json(text: str, status: int = 200) -> Response:
    return Response(text, status, mimetype="application/json")


@bp.get("/items")
def list_items() -> Response:
    args = request.args
    limit = items.parse_int(args.get("limit"), "limit", items.LIMIT_DEFAULT, 1, items.LIMIT_MAX)
    after = items.decode_cursor(args["after"], "after") if "after" in args else 0
    offset = items.parse_int(args.get("offset"), "offset", 0, 0, items.OFFSET_MAX)
    page = _store().oldest(limit, after, offset)
    extra = ""
    if "after" not in args:
        # Without a cursor the answer also carries the deprecated offset fields, so
        # that clients written for offset paging keep working (see the API docs).
        next_offset = offset + limit if page.has_higher else "null"
        extra = f',"offset":{offset},"next_offset":{next_offset}'
    # A cursor is letters and digits (items.CURSOR_PATTERN): no escaping to do.
    cursor = f'"{items.encode_cursor(page.last_id)}"' if page.has_higher else "null"
    # The items are already JSON (written by the database): wrap them, do not re-encode.
    response = _json(f'{{"items":{page.items_json},"limit":{limit},"next":{cursor}{extra}}}')
    if "offset" in args:
        response.headers["Deprecation"] = OFFSET_DEPRECATED
        response.headers["Link"] = '</openapi.json>; rel="deprecation"; type="application/json"'
    return response


@bp.post("/items")
def create_item() -> Response:
    fields = items.validate(_json_body())
    item = _store().create(fields)
    response = _json(item.json, 201)
    # get_item's URL, written out: url_for walks the URL map (about 10 µs a create).
    response.headers["Location"] = f"{request.script_root}{bp.url_prefix}/items/{item.id}"
    return response


@bp.get("/items/<item_id>")
def get_item(item_id: str) -> Response:
    item = _store().get(items.parse_id(item_id))
    if item is None:
        raise _not_found(item_id)
    return _json(item.json)


@bp.put("/items/<item_id>")
def replace_item(item_id: str) -> Response:
    ident = items.parse_id(item_id)
    fields = items.validate(_json_body())
    item = _store().replace(ident, fields)
    if item is None:
        raise _not_found(item_id)
    return _json(item.json)


@bp.delete("/items/<item_id>")
def delete_item(item_id: str) -> tuple[str, int]:
    if not _store().delete(items.parse_id(item_id)):
        raise _not_found(item_id)
    return "", 204
