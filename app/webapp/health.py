"""Probes: /healthz (the process answers) and /readyz (the database answers too, with the
schema this release needs: a pod started before its migrations ran takes no traffic)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from webapp import migrate
from webapp.db import Database, DatabaseUnavailable
from webapp.errors import error_response

bp = Blueprint("health", __name__)


_ALIVE = b'{"status":"ok"}\n'
# The latest migration this release ships; a newer database schema is one its migrations'
# rules keep readable by the release before (app/webapp/migrations/0003_items_page.sql).
_NEEDED = migrate.discover()[-1].version


@bp.get("/healthz")
def healthz() -> Response:
    # Probed often (kubelet, load balancers): a fixed body, no JSON encoding.
    return Response(_ALIVE, mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    db: Database = current_app.extensions["webapp.db"]
    try:
        applied = db.run(migrate.applied_version, idempotent=True)
    except DatabaseUnavailable as exc:
        return error_response(503, "not_ready", str(exc))
    if applied is None or applied < _NEEDED:
        return error_response(
            503,
            "not_ready",
            f"the database schema is at version {applied or 'none'}, this release needs "
            f"{_NEEDED}: run the migrations (python -m webapp.migrate)",
        )
    return jsonify(status="ready")
