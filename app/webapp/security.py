"""Security headers on every response, and the request id that ties logs together."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, current_app, g, request

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

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


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _add_headers(response: Response) -> Response:
    # One pass over the existing headers, then appends: this runs on every request.
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    wanted = list(HEADERS.items())
    if current_app.config.get("WEBAPP_HSTS"):
        wanted.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    if request.path.startswith("/api/"):
        wanted.append(("Cache-Control", "no-store"))
    for name, value in wanted:
        if name.lower() not in present:
            headers.add(name, value)
    if "request_id" in g:
        headers["X-Request-ID"] = g.request_id
    return response


def init_app(app: Flask, hsts: bool) -> None:
    app.before_request(_assign_request_id)
    app.after_request(_add_headers)
    app.config["WEBAPP_HSTS"] = hsts
