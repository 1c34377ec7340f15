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
DOCUMENT_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
# JSON (the API, the probes, the API's errors): OWASP's REST set. Opened in a browser it is a
# document that loads and runs nothing, so the two headers that only govern what a
# document's scripts may do or reach (its opener, its device features) are left out:
# gunicorn checks and writes each header of each response, 2-6 us apiece.
_DOCUMENT_ONLY = ("Cross-Origin-Opener-Policy", "Permissions-Policy")
JSON_HEADERS = {
    name: value for name, value in DOCUMENT_HEADERS.items() if name not in _DOCUMENT_ONLY
} | {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
_API_ONLY = ("Cache-Control", "no-store")

StartResponse = Callable[..., Any]


class SecurityHeaders:
    """Adds the headers a response does not set itself, and X-Request-ID."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], hsts: bool) -> None:
        self.wsgi_app = wsgi_app
        tls = [HSTS] if hsts else []

        def pairs(headers: list[tuple[str, str]]) -> list[tuple[str, tuple[str, str]]]:
            # (lower-case name, header), computed once.
            return [(name.lower(), (name, value)) for name, value in headers]

        document = pairs([*DOCUMENT_HEADERS.items(), *tls])
        json_body = pairs([*JSON_HEADERS.items(), *tls])
        api = pairs([_API_ONLY])
        # (API path?, JSON body?) -> the headers a response does not set itself.
        self._wanted = {
            (False, False): document,
            (False, True): json_body,
            (True, False): document + api,
            (True, True): json_body + api,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        environ[ENVIRON_KEY] = request_id
        api = environ.get("PATH_INFO", "").startswith("/api/")

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower(): value for name, value in headers}
            media_type = present.get("content-type", "").partition(";")[0].strip().lower()
            json_body = media_type == "application/json"
            wanted = self._wanted[api, json_body]
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
