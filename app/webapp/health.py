"""Probes: /healthz (the process answers) and /readyz (the database answers too, with the
schema this release needs: a pod started before its migrations ran takes no traffic)."""

from __future__ import annotations

import logging

import psycopg2
from flask import Blueprint, Response, current_app, jsonify

from webapp import migrate
from webapp.db import Database, DatabaseUnavailable
from webapp.errors import error_response

bp = Blueprint("health", __name__)
_STATE = "webapp.readiness"


_ALIVE = b'{"status":"ok"}\n'
# The migrations this release ships, all of which its queries may rely on.
_NEEDED = [migration.version for migration in migrate.discover()]
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    # Probed often (kubelet, load balancers): a fixed body, no JSON encoding.
    return Response(_ALIVE, mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    db: Database = current_app.extensions["webapp.db"]
    try:
        lacking = db.run(lambda cur: migrate.missing(cur, _NEEDED), idempotent=True)
    except DatabaseUnavailable as exc:
        return error_response(503, "not_ready", str(exc))
    except psycopg2.Error as exc:  # e.g. a login that may not read schema_migrations
        log.warning("readiness: cannot read schema_migrations", extra={"reason": exc.pgerror})
        return error_response(503, "not_ready", "cannot read the database's schema_migrations")
    state = current_app.extensions.setdefault(_STATE, {"lacking": []})
    if lacking != state["lacking"]:
        # The kubelet keeps only the status of a failed probe: the reason goes to the log,
        # once each time it changes.
        state["lacking"] = lacking
        if lacking:
            log.warning("not ready: the database lacks migrations", extra={"lacking": lacking})
        else:
            log.info("ready: the database has every migration of this release")
    if lacking:
        return error_response(
            503,
            "not_ready",
            f"the database lacks this release's migrations {', '.join(lacking)}: "
            "run the migrations (python -m webapp.migrate)",
        )
    return jsonify(status="ready")
