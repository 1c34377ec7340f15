"""Prometheus metrics, correct under gunicorn's several worker processes.

With PROMETHEUS_MULTIPROC_DIR set (before Python starts, see gunicorn.conf.py and
the Containerfile) each worker writes its samples to files there and /metrics
merges them with a fresh registry per request. Requests are labelled `route` with the
URL rule (`/api/v1/items/<item_id>`), never the raw path; not `endpoint`, which the
Prometheus operator sets on every target to the scraped port's name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.routing import Rule

REQUESTS = Counter("http_requests_total", "HTTP requests served.", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time spent answering HTTP requests.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being answered right now.",
    multiprocess_mode="livesum",
)
# Pages of items (API and HTML lists): served again from the worker's copy, unchanged
# since it was read (webapp.snapshotcache), or read from the table.
ITEM_PAGES = Counter("webapp_item_pages_total", "Pages of items answered, by source.", ["source"])

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "<unmatched>"
_RULE_KEY = "webapp.url_rule"


class RoutedRequest(Request):
    """Flask's request, keeping the URL rule it matched in the WSGI environ too, where
    the middleware below reads it once Flask is done with the request."""

    @property  # type: ignore[override]
    def url_rule(self) -> Rule | None:
        return self.environ.get(_RULE_KEY)

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self.environ[_RULE_KEY] = rule


StartResponse = Callable[..., Any]


class RequestMetrics:
    """Counts and times every request around the Flask app: one WSGI wrapper costs a
    fraction of Flask's three per-request hooks (before, after, teardown)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app
        # (method, route, status) -> (latency child, counter child): `labels()` takes a
        # lock and builds tuples on every call; the set of keys is small and bounded.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises instead of answering

        def start_with_status(code: str, headers: list[Any], exc_info: Any = None) -> Any:
            nonlocal status
            status = int(code[:3])
            return start_response(code, headers, exc_info)

        IN_PROGRESS.inc()
        try:
            return self.wsgi_app(environ, start_with_status)
        finally:
            IN_PROGRESS.dec()
            method = environ.get("REQUEST_METHOD", "")
            rule = environ.get(_RULE_KEY)
            key = (
                method if method in _METHODS else "OTHER",
                rule.rule if rule is not None else UNMATCHED,
                status,
            )
            children = self._children.get(key)
            if children is None:
                children = self._children.setdefault(
                    key,
                    (LATENCY.labels(key[0], key[1]), REQUESTS.labels(key[0], key[1], str(status))),
                )
            children[0].observe(time.perf_counter() - start)
            children[1].inc()


def metrics_view() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.request_class = RoutedRequest
    app.wsgi_app = RequestMetrics(app.wsgi_app)  # type: ignore[method-assign]
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
