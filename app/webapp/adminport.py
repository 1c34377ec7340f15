"""The admin port: /metrics and /readyz only there, the API and the page only elsewhere.

gunicorn listens on a second port when WEBAPP_ADMIN_PORT is set (app/gunicorn.conf.py).
The Service, the NodePort and the Ingress lead to the public port only, so the metrics and
the readiness check stay inside the cluster, for the kubelet and Prometheus. /healthz
answers on both. Without WEBAPP_ADMIN_PORT every path answers on the one port.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, abort, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

ADMIN_ONLY = frozenset({"metrics", "health.readyz"})
EVERYWHERE = frozenset({"health.healthz"})


def _endpoint() -> str | None:
    """The endpoint of the path, even when the method is wrong: a 405 would tell the public
    port that /metrics exists."""
    if not isinstance(request.routing_exception, MethodNotAllowed):
        return request.endpoint
    adapter = current_app.create_url_adapter(request)
    try:
        endpoint, _ = adapter.match(method="GET")
    except HTTPException:
        return None
    return endpoint


def _split(admin_port: int) -> Callable[[], None]:
    admin = str(admin_port)

    def only_where_it_belongs() -> None:
        # gunicorn sets SERVER_PORT from the listening socket, never from the Host header.
        on_admin_port = request.environ.get("SERVER_PORT") == admin
        endpoint = _endpoint()
        if endpoint not in EVERYWHERE and on_admin_port != (endpoint in ADMIN_ONLY):
            abort(404)

    return only_where_it_belongs


def init_app(app: Flask, admin_port: int | None) -> None:
    if admin_port is not None:
        app.before_request(_split(admin_port))
