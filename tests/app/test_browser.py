"""The HTML page in real headless Chromium: sign in, add an item through the form, see it listed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import CHROMIUM, FLAGS
from tests.support.gunicorn import GunicornServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(writers_env: dict[str, str]) -> Iterator[GunicornServer]:
    """As deployed: writes need a credential, so the page needs signing in."""
    with GunicornServer(writers_env, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def signed_in_page(browser: Browser, server: GunicornServer, credential: str) -> Page:
    page = browser.new_page()
    page.goto(server.url + "/")
    assert page.locator("form.add").count() == 0
    page.fill("#credential", credential)
    page.click("form.signin button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.locator("form.add").count() == 1
    return page


def test_add_item_through_the_form(
    server: GunicornServer, browser: Browser, writer_credentials: list[str]
) -> None:
    page = browser.new_page()
    blocked: list[str] = []
    page.on("console", lambda msg: blocked.append(msg.text) if msg.type == "error" else None)
    outside: list[str] = []
    page.on(
        "request",
        lambda req: outside.append(req.url) if not req.url.startswith(server.url) else None,
    )

    page.goto(server.url + "/")
    assert page.title() == "webapp: items"
    page.fill("#credential", writer_credentials[0])
    page.click("form.signin button[type=submit]")
    page.wait_for_url(server.url + "/")
    name = f"from the browser {uuid.uuid4().hex[:8]}"
    page.fill("#name", name)
    page.fill("#description", "typed into the form <script>alert(1)</script>")
    page.click("form.add button[type=submit]")
    page.wait_for_url(server.url + "/")

    names = page.locator("#items td.name").all_inner_texts()
    assert name in names
    assert "<script>alert(1)</script>" in page.locator("#items").inner_text()  # shown as text
    # The stylesheet loaded (no CSP violation) and nothing was fetched from elsewhere.
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    assert outside == []
    assert blocked == []

    # The item is really stored: the API returns it.
    listed = requests.get(server.url + "/api/v1/items?limit=100", timeout=5).json()["items"]
    assert name in {item["name"] for item in listed}
    page.close()


def test_blank_name_is_refused_with_a_message(
    server: GunicornServer, browser: Browser, writer_credentials: list[str]
) -> None:
    page = signed_in_page(browser, server, writer_credentials[1])
    page.fill("#name", "   ")
    page.click("form.add button[type=submit]")
    assert "must not be blank" in page.locator(".error").inner_text()
    page.close()


def test_form_without_csrf_token_is_refused(server: GunicornServer) -> None:
    before = requests.get(server.url + "/api/v1/items?limit=100", timeout=5).json()["items"]
    # A cross-site form post: no cookie, no token.
    resp = requests.post(server.url + "/items", data={"name": "forged"}, timeout=5)
    assert resp.status_code == 400
    # A token without the matching cookie (an attacker can read neither).
    session = requests.Session()
    session.get(server.url + "/", timeout=5)
    resp = session.post(server.url + "/items", data={"name": "forged", "csrf_token": "x" * 43})
    assert resp.status_code == 400
    # Right token, but from another origin.
    token = session.cookies["webapp_csrf"]
    resp = session.post(
        server.url + "/items",
        data={"name": "forged", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
        timeout=5,
    )
    assert resp.status_code == 403
    after = requests.get(server.url + "/api/v1/items?limit=100", timeout=5).json()["items"]
    assert after == before


def test_csrf_cookie_is_strict(server: GunicornServer) -> None:
    resp = requests.get(server.url + "/", timeout=5)
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_sign_out_ends_the_session(
    server: GunicornServer, browser: Browser, writer_credentials: list[str]
) -> None:
    page = signed_in_page(browser, server, writer_credentials[0])
    page.click("form.signout button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert page.locator("form.add").count() == 0
    assert page.locator("form.signin").count() == 1
    page.close()
