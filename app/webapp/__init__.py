"""webapp: a small Flask service for items, on PostgreSQL.

`create_app` is imported lazily so that gunicorn.conf.py can import helpers from
this package before prometheus_client is loaded (its multiprocess mode is chosen
at import time from PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    from webapp.factory import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
