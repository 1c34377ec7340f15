"""The application factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from webapp import (
    adminport,
    api,
    config,
    errors,
    health,
    logsetup,
    metrics,
    openapi,
    security,
    web,
    writers,
)
from webapp.db import Database
from webapp.items import ItemStore
from webapp.snapshotcache import SnapshotCache


def create_app(
    env: Mapping[str, str] | None = None, test_config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the service from the environment (or `env`); raises config.ConfigError."""
    settings = config.load(env)
    logsetup.configure(settings.log_level)

    app = Flask(__name__.rsplit(".", 1)[0])
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
        WEBAPP_COOKIE_SECURE=settings.cookie_secure,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)

    db = Database(settings)
    app.extensions["webapp.db"] = db
    app.extensions["webapp.items"] = ItemStore(db, SnapshotCache(settings.page_cache_bytes))

    security.init_app(app, hsts=settings.cookie_secure)
    metrics.init_app(app)
    adminport.init_app(app, settings.admin_port)
    writers.init_app(app, settings.writer_keys)
    errors.init_app(app)
    for blueprint in (health.bp, api.bp, web.bp, openapi.bp):
        app.register_blueprint(blueprint)
    app.logger.info("webapp configured", extra={"db": settings.db_target})
    return app
