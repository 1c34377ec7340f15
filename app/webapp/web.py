"""The HTML page: list items; sign in, then add one through a CSRF-protected form.

CSRF protection is the double-submit pattern: a random token lives in a
SameSite=Strict, HttpOnly cookie and in a hidden form field, and a POST must carry
both, equal. It needs no server-side session, so any gunicorn worker (or any
replica) can check it. A cross-site Origin header is refused as well. Signing in is
described in webapp.writers.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from webapp import items, writers
from webapp.errors import APIError
from webapp.items import ItemStore

bp = Blueprint("web", __name__)
CSRF_COOKIE = "webapp_csrf"
PAGE_SIZE = 100


def _store() -> ItemStore:
    return current_app.extensions["webapp.items"]


def _cookie_name(name: str) -> str:
    """Behind TLS the `__Host-` prefix: browsers take such a cookie only from this host over
    HTTPS, so a sibling subdomain or a plain-HTTP response cannot plant or overwrite it."""
    return f"__Host-{name}" if current_app.config["WEBAPP_COOKIE_SECURE"] else name


def _cookie(name: str) -> str:
    return request.cookies.get(_cookie_name(name), "")


def _signed_in() -> bool:
    return writers.current().session_ok(_cookie(writers.SESSION_COOKIE))


def _set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        _cookie_name(name),
        value,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=current_app.config["WEBAPP_COOKIE_SECURE"],
    )


def _page(
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
    cursor: tuple[str, int] | None = None,
) -> Response:
    token = _cookie(CSRF_COOKIE)
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
    rows, page = _listing(cursor)
    body = render_template(
        "index.html",
        items=rows,
        # Items beyond either end imply the page has them: first_id and last_id are set.
        older=items.encode_cursor(page.first_id) if page.has_lower else None,
        newer=items.encode_cursor(page.last_id) if page.has_higher else None,
        csrf_token=token,
        writers_open=writers.current().open,
        signed_in=_signed_in(),
        error=error,
        form=form or {},
        name_max=items.NAME_MAX,
        description_max=items.DESCRIPTION_MAX,
    )
    response = make_response(body, status)
    _set_cookie(response, CSRF_COOKIE, token)
    response.headers["Cache-Control"] = "no-store"
    return response


def _listing(cursor: tuple[str, int] | None) -> tuple[list[dict[str, Any]], items.Page]:
    """Newest first; `before` goes to older items, `after` back to newer ones."""
    store = _store()
    if cursor is not None:
        direction, item_id = cursor
        if direction == "after":
            page = store.oldest(PAGE_SIZE, item_id)
            if page.has_higher:
                return page.items()[::-1], page
        else:
            page = store.newest(PAGE_SIZE, item_id)
            if page.first_id is not None:
                return page.items(), page
    # No cursor, the newest items reached, or nothing left below the cursor.
    page = store.newest(PAGE_SIZE)
    return page.items(), page


@bp.get("/")
def index() -> Response:
    for direction in ("before", "after"):
        if direction in request.args:
            try:
                item_id = items.decode_cursor(request.args[direction], direction)
            except APIError:
                return _page(400, "That page link is not valid; here are the newest items.")
            return _page(cursor=(direction, item_id))
    return _page()


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    # Browsers send "null" when the page's Referrer-Policy is no-referrer (ours is);
    # the token and the SameSite=Strict cookie still protect such a post.
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.host


def _form_post(view: Callable[[], Response]) -> Callable[[], Response]:
    """Answer a form post with `view` only once it passes the CSRF checks."""

    @functools.wraps(view)
    def checked() -> Response:
        cookie = _cookie(CSRF_COOKIE)
        field = request.form.get("csrf_token", "")
        if not _same_origin():
            return _page(403, "The form was sent from another site and was refused.")
        if len(cookie) < 32 or not hmac.compare_digest(cookie.encode(), field.encode()):
            return _page(400, "The form has expired. Please submit it again.")
        return view()

    return checked


@bp.post("/signin")
@_form_post
def sign_in() -> Response:
    session = writers.current().session_for(request.form.get("credential", "").strip())
    if session is None:
        return _page(401, "That credential is not valid.")
    response = redirect(url_for("web.index"), code=303)
    _set_cookie(response, writers.SESSION_COOKIE, session, writers.SESSION_SECONDS)
    return response


@bp.post("/signout")
@_form_post
def sign_out() -> Response:
    response = redirect(url_for("web.index"), code=303)
    _set_cookie(response, writers.SESSION_COOKIE, "", 0)
    return response


@bp.post("/items")
@_form_post
def add_item() -> Response:
    if not _signed_in():
        return _page(401, "Sign in to add items.")
    form = {
        "name": request.form.get("name", ""),
        "description": request.form.get("description", ""),
    }
    try:
        fields = items.validate(form)
    except APIError as exc:
        return _page(400, exc.detail, form)
    _store().create(fields)
    return redirect(url_for("web.index"), code=303)
