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
from typing import Any

from flask import Flask, Response, g, request
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

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "<unmatched>"


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def _before() -> None:
    g.metrics_start = time.perf_counter()
    IN_PROGRESS.inc()


# (method, route, status) -> (latency child, counter child): `labels()` takes a
# lock and builds tuples on every call; the set of keys is small and bounded.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _after(response: Response) -> Response:
    start = g.get("metrics_start")
    if start is not None:
        method = request.method if request.method in _METHODS else "OTHER"
        key = (method, _route(), response.status_code)
        children = _children.get(key)
        if children is None:
            children = _children.setdefault(
                key,
                (LATENCY.labels(key[0], key[1]), REQUESTS.labels(key[0], key[1], str(key[2]))),
            )
        children[0].observe(time.perf_counter() - start)
        children[1].inc()
    return response


def _teardown(_exc: BaseException | None) -> None:
    # Teardown runs even when a response was never made, so the gauge cannot drift.
    if "metrics_start" in g:
        IN_PROGRESS.dec()


def metrics_view() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.before_request(_before)
    app.after_request(_after)
    app.teardown_request(_teardown)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
