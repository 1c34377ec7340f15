"""Writes need a credential (WEBAPP_WRITERS_FILE): a bearer on the API, a session on the page."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webapp import create_app
from webapp.config import ConfigError
from webapp.writers import SESSION_COOKIE, SESSION_SECONDS, Writers

ITEMS = "/api/v1/items"


@pytest.fixture(scope="module")
def app(writers_env: dict[str, str]) -> Iterator[Flask]:
    flask_app = create_app(writers_env)
    yield flask_app
    flask_app.extensions["webapp.db"].close()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def names(client: FlaskClient) -> list[str]:
    return [item["name"] for item in client.get(f"{ITEMS}?limit=100").json["items"]]


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="webapp"'),
        ({"Authorization": "Basic d3JpdGVyOnNlY3JldA=="}, 'Bearer realm="webapp"'),
        ({"Authorization": "Bearer "}, 'Bearer realm="webapp"'),
        (bearer("x" * 43), 'Bearer realm="webapp", error="invalid_token"'),
    ],
    ids=["no-header", "basic-scheme", "empty-bearer", "unknown-credential"],
)
def test_api_write_without_a_valid_credential_is_refused_and_changes_nothing(
    client: FlaskClient, writer_credentials: list[str], headers: dict[str, str], challenge: str
) -> None:
    created = client.post(ITEMS, json={"name": "kept"}, headers=bearer(writer_credentials[0]))
    item = created.headers["Location"]
    before = names(client)

    attempts = [
        client.post(ITEMS, json={"name": "intruder"}, headers=headers),
        client.put(item, json={"name": "intruder"}, headers=headers),
        client.delete(item, headers=headers),
    ]

    for resp in attempts:
        assert resp.status_code == 401
        assert resp.json["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"] == challenge
    assert names(client) == before
    assert client.get(item).json["name"] == "kept"


def test_each_credential_of_the_file_may_write(
    client: FlaskClient, writer_credentials: list[str]
) -> None:
    for number, credential in enumerate(writer_credentials):
        created = client.post(ITEMS, json={"name": f"by {number}"}, headers=bearer(credential))
        assert created.status_code == 201
        item = created.headers["Location"]
        replaced = client.put(item, json={"name": f"again {number}"}, headers=bearer(credential))
        assert replaced.status_code == 200
        assert client.delete(item, headers=bearer(credential)).status_code == 204
        assert client.get(item).status_code == 404


def test_reads_stay_open(client: FlaskClient, writer_credentials: list[str]) -> None:
    created = client.post(ITEMS, json={"name": "readable"}, headers=bearer(writer_credentials[1]))
    assert client.get(created.headers["Location"]).json["name"] == "readable"
    assert client.get(ITEMS).status_code == 200
    assert client.get("/").status_code == 200


def test_the_challenge_comes_before_the_body_is_read(client: FlaskClient) -> None:
    resp = client.post(ITEMS, data="not json", content_type="text/plain")
    assert resp.status_code == 401


# --- The page ------------------------------------------------------------------------------


def csrf(client: FlaskClient) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(client: FlaskClient, credential: str) -> int:
    form = {"csrf_token": csrf(client), "credential": credential}
    return client.post("/signin", data=form).status_code


def add(client: FlaskClient, name: str) -> int:
    return client.post("/items", data={"csrf_token": csrf(client), "name": name}).status_code


def test_page_offers_sign_in_and_refuses_to_add_before_it(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'action="/signin"' in page
    assert 'action="/items"' not in page

    assert add(client, "before signing in") == 401
    assert "before signing in" not in names(client)


def test_wrong_credential_does_not_sign_in(client: FlaskClient) -> None:
    assert sign_in(client, "y" * 43) == 401
    assert client.get_cookie(SESSION_COOKIE) is None
    assert add(client, "after a wrong credential") == 401


def test_signed_in_browser_adds_items_until_it_signs_out(
    app: Flask, writer_credentials: list[str]
) -> None:
    client = app.test_client()
    assert sign_in(client, writer_credentials[0]) == 303
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie.http_only and cookie.same_site == "Strict"
    assert cookie.max_age == SESSION_SECONDS
    assert 'action="/items"' in client.get("/").get_data(as_text=True)

    assert add(client, "from a signed-in page") == 303
    assert "from a signed-in page" in names(client)

    assert client.post("/signout", data={"csrf_token": csrf(client)}).status_code == 303
    assert client.get_cookie(SESSION_COOKIE) is None
    assert add(client, "after signing out") == 401
    assert "after signing out" not in names(client)


def test_sign_in_needs_the_csrf_token(client: FlaskClient, writer_credentials: list[str]) -> None:
    resp = client.post("/signin", data={"credential": writer_credentials[0]})
    assert resp.status_code == 400
    assert client.get_cookie(SESSION_COOKIE) is None


def test_session_cookie_is_not_a_bearer_and_not_forgeable(
    app: Flask, client: FlaskClient, writer_credentials: list[str]
) -> None:
    writers: Writers = app.extensions["webapp.writers"]
    session = writers.session_for(writer_credentials[0])
    issued, mac = session.split(".")
    forged = [f"{int(issued) + 3600}.{mac}", f"{issued}.{'0' * 64}", "", "abc", f"{issued}."]
    for value in forged:
        client.set_cookie(SESSION_COOKIE, value)
        assert add(client, f"forged {value}") == 401
    # The API takes a bearer credential only, never the page's cookie.
    client.set_cookie(SESSION_COOKIE, session)
    assert client.post(ITEMS, json={"name": "cookie on the API"}).status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "\u00b2.{mac}",  # a Unicode digit: str.isdigit() says yes, int() says no
        "9" * 3900 + ".{mac}",  # too large for a float
        "{issued}." + "\u00e9" * 64,  # non-ASCII: compare_digest raises on str
        "{issued}.{upper}",
        " {issued}.{mac}",
        "{issued}.{mac}.",
        "{issued}.{mac}\n",
    ],
    ids=["unicode-digit", "5000-digits", "non-ascii-mac", "upper-hex", "space", "dot", "newline"],
)
def test_crafted_session_cookie_is_refused_not_an_error(
    app: Flask, client: FlaskClient, writer_credentials: list[str], value: str
) -> None:
    session = app.extensions["webapp.writers"].session_for(writer_credentials[0])
    issued, mac = session.split(".")
    client.set_cookie(SESSION_COOKIE, value.format(issued=issued, mac=mac, upper=mac.upper()))
    assert add(client, "with a crafted cookie") == 401
    assert client.get("/").status_code == 200


def test_the_credentials_digest_forges_no_session(
    app: Flask, client: FlaskClient, writer_credentials: list[str]
) -> None:
    """The SHA-256 of a credential (how it is looked up) is not the key sessions are signed with."""
    issued = str(int(time.time()))
    digest = hashlib.sha256(writer_credentials[0].encode()).digest()
    mac = hmac.new(digest, f"webapp-session:{issued}".encode(), hashlib.sha256).hexdigest()
    client.set_cookie(SESSION_COOKIE, f"{issued}.{mac}")
    assert add(client, "signed with the lookup digest") == 401


def test_behind_tls_the_cookies_are_host_only_and_secure(
    writers_env: dict[str, str], writer_credentials: list[str]
) -> None:
    secure_app = create_app({**writers_env, "WEBAPP_COOKIE_SECURE": "true"})
    try:
        client = secure_app.test_client()
        https = {"base_url": "https://webapp.test"}
        page = client.get("/", **https).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = {"csrf_token": token, "credential": writer_credentials[0]}
        assert client.post("/signin", data=form, **https).status_code == 303

        cookie = client.get_cookie(f"__Host-{SESSION_COOKIE}", domain="webapp.test")
        assert cookie.secure and cookie.http_only and cookie.path == "/"
        assert cookie.domain == "webapp.test"  # host-only: no Domain attribute was sent
        assert client.get_cookie(SESSION_COOKIE, domain="webapp.test") is None
        assert 'action="/items"' in client.get("/", **https).get_data(as_text=True)

        # A cookie without the prefix (which plain HTTP or a subdomain could set) signs no one in.
        other = secure_app.test_client()
        other.set_cookie(SESSION_COOKIE, cookie.value, domain="webapp.test")
        assert 'action="/signin"' in other.get("/", **https).get_data(as_text=True)
    finally:
        secure_app.extensions["webapp.db"].close()


def test_session_expires(app: Flask, writer_credentials: list[str]) -> None:
    writers: Writers = app.extensions["webapp.writers"]
    now = time.time()
    fresh = writers.session_for(writer_credentials[1], now=now)
    assert writers.session_ok(fresh, now=now + SESSION_SECONDS - 1)
    assert not writers.session_ok(fresh, now=now + SESSION_SECONDS + 1)


def test_removing_a_credential_ends_its_sessions(
    app: Flask, writers_env: dict[str, str], writer_credentials: list[str], tmp_path: Path
) -> None:
    old, kept = writer_credentials
    session = app.extensions["webapp.writers"].session_for(old)
    rotated = tmp_path / "credentials"
    rotated.write_text(kept + "\n")
    restarted = create_app({**writers_env, "WEBAPP_WRITERS_FILE": str(rotated)})
    try:
        client = restarted.test_client()
        client.set_cookie(SESSION_COOKIE, session)
        assert add(client, "with an old session") == 401
        assert client.post(ITEMS, json={"name": "x"}, headers=bearer(old)).status_code == 401
        assert client.post(ITEMS, json={"name": "x"}, headers=bearer(kept)).status_code == 201
    finally:
        restarted.extensions["webapp.db"].close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("short\n", "credential 1 is shorter than 32 characters"),
        ("z" * 40 + "\nshort\n", "credential 2 is shorter than 32 characters"),
        ("z" * 40 + "\nshort" + "\u00e9" * 40 + "\n", "credential 2 has a character that is not"),
        ("short" + " " * 30 + "z\n", "credential 1 has a character that is not"),
    ],
)
def test_bad_writers_file_stops_the_start(
    db_env: dict[str, str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "credentials"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        create_app({**db_env, "WEBAPP_WRITERS_FILE": str(path)})
    assert "short" not in str(caught.value).replace("shorter", "")


def test_missing_writers_file_stops_the_start(db_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_app({**db_env, "WEBAPP_WRITERS_FILE": str(tmp_path / "absent")})
