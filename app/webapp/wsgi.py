"""WSGI entry point: `gunicorn webapp.wsgi:app`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from webapp import create_app
from webapp.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as exc:
    line = {"level": "error", "logger": "webapp", "msg": f"configuration error: {exc}"}
    print(json.dumps(line), file=sys.stderr, flush=True)
    # gunicorn treats exit status 4 as "application failed to load" and stops.
    raise SystemExit(4) from None


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # gunicorn ends the input stream itself (Content-Length or the last chunk), so a
    # chunked body can be read here and is held to MAX_CONTENT_LENGTH by Werkzeug
    # (413) instead of being dropped as if it were empty.
    environ.setdefault("wsgi.input_terminated", True)
    return flask_app(environ, start_response)
