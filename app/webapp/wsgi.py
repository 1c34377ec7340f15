"""WSGI entry point: `gunicorn webapp.wsgi:app`."""

from __future__ import annotations

import json
import sys

from webapp import create_app
from webapp.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    line = {"level": "error", "logger": "webapp", "msg": f"configuration error: {exc}"}
    print(json.dumps(line), file=sys.stderr, flush=True)
    # gunicorn treats exit status 4 as "application failed to load" and stops.
    raise SystemExit(4) from None
