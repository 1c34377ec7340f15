"""/openapi.json: the description of the JSON API (and the probes)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from webapp import items

bp = Blueprint("openapi", __name__)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_ID = {
    "name": "item_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": items.ID_MAX},
}
_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ItemInput"}}},
}
_BAD_BODY = {
    "400": _error("Malformed JSON or invalid fields"),
    "413": _error("Body too large"),
    "415": _error("Body is not application/json"),
}
_DB = {"503": _error("Database unavailable")}
# Writes need the bearer credential when the service has WEBAPP_WRITERS_FILE (it always
# has when deployed); reads are open.
_WRITE = {"security": [{"writer": []}]}
_UNAUTHORIZED = {"401": _error("No credential, or one that is not valid (see WWW-Authenticate)")}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "webapp",
        "version": "1.0.0",
        "description": "Items API of the k3s-ec2-devsecops service.",
    },
    "paths": {
        "/api/v1/items": {
            "get": {
                "operationId": "listItems",
                "summary": "List items, oldest first (stable order by id)",
                "description": (
                    "Pages by cursor: pass the `next` of one page as `after` to get the "
                    "following one; `next` is null on the last page. A cursor is opaque "
                    "and every page costs the same however deep it is. `offset` is "
                    "deprecated: it skips that many items (after the cursor, if one is "
                    "given) and costs a scan of every item it skips; `offset` and "
                    "`next_offset` are answered only to requests without `after`. Move "
                    "by replacing `offset=<next_offset>` with `after=<next>`."
                ),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": items.LIMIT_MAX,
                            "default": items.LIMIT_DEFAULT,
                        },
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "description": "The `next` cursor of the previous page.",
                        "schema": {
                            "type": "string",
                            "pattern": f"^{items.CURSOR_PATTERN.pattern}$",
                        },
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "deprecated": True,
                        "description": "Deprecated: use `after`.",
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": items.OFFSET_MAX,
                            "default": 0,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        **_ok("A page of items", "ItemPage"),
                        "headers": {
                            "Deprecation": {
                                "description": "Sent when `offset` was given (RFC 9745).",
                                "schema": {"type": "string"},
                            },
                            "Link": {
                                "description": "With Deprecation: where the change is told.",
                                "schema": {"type": "string"},
                            },
                        },
                    },
                    "400": _error("Invalid limit, cursor or offset"),
                    **_DB,
                },
            },
            "post": {
                "operationId": "createItem",
                "summary": "Create an item",
                **_WRITE,
                "requestBody": _BODY,
                "responses": {
                    "201": _ok("The new item", "Item"),
                    **_UNAUTHORIZED,
                    **_BAD_BODY,
                    **_DB,
                },
            },
        },
        "/api/v1/items/{item_id}": {
            "parameters": [_ID],
            "get": {
                "operationId": "getItem",
                "summary": "Get one item",
                "responses": {
                    "200": _ok("The item", "Item"),
                    "404": _error("No such item"),
                    **_DB,
                },
            },
            "put": {
                "operationId": "replaceItem",
                "summary": "Replace an item's fields",
                **_WRITE,
                "requestBody": _BODY,
                "responses": {
                    "200": _ok("The updated item", "Item"),
                    **_UNAUTHORIZED,
                    "404": _error("No such item"),
                    **_BAD_BODY,
                    **_DB,
                },
            },
            "delete": {
                "operationId": "deleteItem",
                "summary": "Delete an item",
                **_WRITE,
                "responses": {
                    "204": {"description": "Deleted"},
                    **_UNAUTHORIZED,
                    "404": _error("No such item"),
                    **_DB,
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": _ok("Alive", "Status")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the database answers, with this release's schema",
                "description": "With WEBAPP_ADMIN_PORT set, only on that port (the kubelet's).",
                "responses": {
                    "200": _ok("Ready", "Status"),
                    "404": _error("Asked on the public port while an admin port is set"),
                    "503": _error("Not ready"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "writer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A line of the service's WEBAPP_WRITERS_FILE.",
            }
        },
        "schemas": {
            "ItemInput": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": items.NAME_MAX,
                        "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
                    },
                    "description": {
                        "type": "string",
                        "maxLength": items.DESCRIPTION_MAX,
                        "pattern": "^[^\\u0000]*$",
                    },
                },
            },
            "Item": {
                "type": "object",
                "required": ["id", "name", "description", "created_at", "updated_at"],
                "properties": {
                    "id": {"type": "integer", "format": "int64", "minimum": 1},
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                },
            },
            "ItemPage": {
                "type": "object",
                "required": ["items", "limit", "next"],
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    "limit": {"type": "integer"},
                    "next": {
                        "type": "string",
                        "nullable": True,
                        "pattern": f"^{items.CURSOR_PATTERN.pattern}$",
                    },
                    "offset": {"type": "integer", "deprecated": True},
                    "next_offset": {"type": "integer", "nullable": True, "deprecated": True},
                },
            },
            "Status": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string"}},
            },
            "Error": {
                "type": "object",
                "required": ["error", "detail"],
                "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


@bp.get("/openapi.json")
def spec() -> Response:
    return jsonify(SPEC)
