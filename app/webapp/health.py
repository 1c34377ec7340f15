"""Probes: /healthz (the process answers) and /readyz (the database answers too)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from webapp.db import Database, DatabaseUnavailable
from webapp.errors import error_response

bp = Blueprint("health", __name__)


_ALIVE = b'{"status":"ok"}\n'


@bp.get("/healthz")
def healthz() -> Response:
    # Probed often (kubelet, load balancers): a fixed body, no JSON encoding.
    return Response(_ALIVE, mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    db: Database = current_app.extensions["webapp.db"]
    try:
        db.ping()
    except DatabaseUnavailable as exc:
        return error_response(503, "not_ready", str(exc))
    return jsonify(status="ready")
