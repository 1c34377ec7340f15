"""Every error leaves as JSON `{"error": ..., "detail": ...}` with a 4xx/5xx status."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from webapp.db import DatabaseUnavailable

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, error: str, detail: str) -> Response:
    response = jsonify(error=error, detail=detail)
    response.status_code = status
    return response


def _api_error(exc: APIError) -> Response:
    response = error_response(exc.status, exc.error, exc.detail)
    response.headers.update(exc.headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    name = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(code, name, exc.description or "")
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


def _db_unavailable(exc: DatabaseUnavailable) -> Response:
    response = error_response(503, "database_unavailable", str(exc))
    response.headers["Retry-After"] = "5"
    return response


def _unexpected(exc: Exception) -> Response:
    if getattr(request.environ.get("wsgi.input"), "failed", False):
        # gunicorn marks its input stream when reading the body raised: a chunk size that
        # is not hex, a chunk without its CRLF, a client gone mid-body. The client's error,
        # found only when the app reads the body; gunicorn then closes the connection.
        return error_response(
            400, "bad_request", "the body could not be read: broken chunked framing or cut short"
        )
    log.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed; the request id is in the logs")


def init_app(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DatabaseUnavailable, _db_unavailable)
    app.register_error_handler(Exception, _unexpected)
