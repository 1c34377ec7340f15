"""Security headers on every response, and the request id that ties logs together.

Both are added by a WSGI middleware around the Flask app: it runs on every request,
and appending fixed header tuples there costs a fraction of Flask's per-request hooks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
ENVIRON_KEY = "webapp.request_id"

# The HTML page uses only its own stylesheet and posts only to itself.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
_API_ONLY = ("Cache-Control", "no-store")

StartResponse = Callable[..., Any]


class SecurityHeaders:
    """Adds the headers a response does not set itself, and X-Request-ID."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], hsts: bool) -> None:
        self.wsgi_app = wsgi_app
        page = list(HEADERS.items()) + ([HSTS] if hsts else [])
        # (lower-case name, header) pairs, computed once.
        self._page = [(name.lower(), (name, value)) for name, value in page]
        self._api = [*self._page, (_API_ONLY[0].lower(), _API_ONLY)]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        environ[ENVIRON_KEY] = request_id
        wanted = self._api if environ.get("PATH_INFO", "").startswith("/api/") else self._page

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(header for lower, header in wanted if lower not in present)
            if "x-request-id" not in present:
                headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def request_id() -> str | None:
    """The id of the request being answered (call inside a request context)."""
    return request.environ.get(ENVIRON_KEY)


def init_app(app: Flask, hsts: bool) -> None:
    app.wsgi_app = SecurityHeaders(app.wsgi_app, hsts)  # type: ignore[method-assign]
