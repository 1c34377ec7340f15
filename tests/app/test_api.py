"""The JSON API on a real PostgreSQL: behaviour, and a 4xx JSON error for every bad input."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

ITEMS = "/api/v1/items"


def create(client: FlaskClient, name: str, description: str | None = None) -> dict:
    body = {"name": name} if description is None else {"name": name, "description": description}
    resp = client.post(ITEMS, json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()


def assert_error(resp, status: int, error: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["detail"], str)
    if error:
        assert body["error"] == error
    return body


def test_create_get_replace_delete(client: FlaskClient) -> None:
    item = create(client, "first", "a description")
    assert item["name"] == "first"
    assert item["description"] == "a description"

    resp = client.get(f"{ITEMS}/{item['id']}")
    assert resp.status_code == 200
    assert resp.get_json() == item

    resp = client.put(f"{ITEMS}/{item['id']}", json={"name": "renamed"})
    assert resp.status_code == 200
    replaced = resp.get_json()
    assert (replaced["name"], replaced["description"]) == ("renamed", "")
    assert replaced["updated_at"] >= item["updated_at"]
    assert client.get(f"{ITEMS}/{item['id']}").get_json()["name"] == "renamed"

    assert client.delete(f"{ITEMS}/{item['id']}").status_code == 204
    assert_error(client.get(f"{ITEMS}/{item['id']}"), 404, "not_found")
    assert_error(client.delete(f"{ITEMS}/{item['id']}"), 404, "not_found")


def test_create_answers_location_of_the_new_item(client: FlaskClient) -> None:
    resp = client.post(ITEMS, json={"name": "located"})
    assert resp.status_code == 201
    assert client.get(resp.headers["Location"]).get_json()["name"] == "located"


def test_list_pages_in_a_stable_order(client: FlaskClient) -> None:
    made = [create(client, f"page-{i}")["id"] for i in range(7)]
    seen: list[int] = []
    offset = 0
    while True:
        resp = client.get(ITEMS, query_string={"limit": 3, "offset": offset})
        assert resp.status_code == 200
        page = resp.get_json()
        assert page["limit"] == 3
        assert len(page["items"]) <= 3
        seen += [row["id"] for row in page["items"]]
        if page["next_offset"] is None:
            break
        offset = page["next_offset"]
    assert seen == sorted(seen), "pages are not in id order"
    assert len(seen) == len(set(seen)), "an item appeared on two pages"
    assert set(made) <= set(seen)
    # The same page twice is the same page.
    first = client.get(ITEMS, query_string={"limit": 5}).get_json()["items"]
    assert first == client.get(ITEMS, query_string={"limit": 5}).get_json()["items"]


def test_unicode_text_round_trips(client: FlaskClient) -> None:
    item = create(client, "Grüße 🚀 <b>x</b>", "ünïcødé\nline two")
    assert client.get(f"{ITEMS}/{item['id']}").get_json()["name"] == "Grüße 🚀 <b>x</b>"


def test_limits_are_inclusive(client: FlaskClient) -> None:
    item = create(client, "n" * 100, "d" * 1000)
    assert len(item["name"]) == 100
    assert len(item["description"]) == 1000


BAD_BODIES = [
    pytest.param(b'{"name": "x"', "malformed_json", id="truncated-json"),
    pytest.param(b"", "malformed_json", id="empty-body"),
    pytest.param(b"not json at all", "malformed_json", id="not-json"),
    pytest.param(b'{"name": NaN}', "malformed_json", id="nan"),
    pytest.param(b"\xff\xfe\xfa", "malformed_json", id="invalid-utf8"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "malformed_json", id="deeply-nested"),
    pytest.param(b'["name"]', "validation_error", id="array-not-object"),
    pytest.param(b'"name"', "validation_error", id="string-not-object"),
    pytest.param(b"null", "validation_error", id="null-body"),
    pytest.param(b"{}", "validation_error", id="missing-name"),
    pytest.param(b'{"name": 5}', "validation_error", id="name-number"),
    pytest.param(b'{"name": null}', "validation_error", id="name-null"),
    pytest.param(b'{"name": ["a"]}', "validation_error", id="name-list"),
    pytest.param(b'{"name": ""}', "validation_error", id="name-empty"),
    pytest.param(b'{"name": "   "}', "validation_error", id="name-blank"),
    pytest.param(b'{"name": "' + b"x" * 101 + b'"}', "validation_error", id="name-too-long"),
    pytest.param(b'{"name": "a\\u0000b"}', "validation_error", id="name-nul"),
    pytest.param(b'{"name": "\\ud800"}', "validation_error", id="name-lone-surrogate"),
    pytest.param(b'{"name": "a", "description": 3}', "validation_error", id="description-number"),
    pytest.param(
        b'{"name": "a", "description": "' + b"d" * 1001 + b'"}',
        "validation_error",
        id="description-too-long",
    ),
    pytest.param(b'{"name": "a", "admin": true}', "validation_error", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "error"), BAD_BODIES)
def test_bad_create_body_is_a_400_and_stores_nothing(
    client: FlaskClient, body: bytes, error: str
) -> None:
    before = client.get(ITEMS, query_string={"limit": 100}).get_json()["items"]
    resp = client.post(ITEMS, data=body, content_type="application/json")
    assert_error(resp, 400, error)
    assert client.get(ITEMS, query_string={"limit": 100}).get_json()["items"] == before


@pytest.mark.parametrize(("body", "error"), BAD_BODIES[:8])
def test_bad_replace_body_is_a_400_and_changes_nothing(
    client: FlaskClient, body: bytes, error: str
) -> None:
    item = create(client, "keep me")
    resp = client.put(f"{ITEMS}/{item['id']}", data=body, content_type="application/json")
    assert_error(resp, 400, error)
    assert client.get(f"{ITEMS}/{item['id']}").get_json() == item


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_wrong_content_type_is_a_415(client: FlaskClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post(ITEMS, data=json.dumps({"name": "x"}), headers=headers)
    assert_error(resp, 415, "unsupported_media_type")


def test_a_body_shorter_than_its_content_length_is_a_400(client: FlaskClient) -> None:
    resp = client.post(
        ITEMS,
        data=b'{"name": "cut"}',
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "50"},
    )
    assert_error(resp, 400, "malformed_json")


def test_oversized_body_is_a_413(client: FlaskClient) -> None:
    body = json.dumps({"name": "x", "description": "d" * 20_000})
    assert_error(client.post(ITEMS, data=body, content_type="application/json"), 413)


@pytest.mark.parametrize(
    "item_id", ["999999", "0", "-1", "abc", "1.5", "99999999999999999999999", "9223372036854775808"]
)
def test_unknown_or_impossible_id_is_a_404(client: FlaskClient, item_id: str) -> None:
    assert_error(client.get(f"{ITEMS}/{item_id}"), 404, "not_found")
    assert_error(client.put(f"{ITEMS}/{item_id}", json={"name": "x"}), 404, "not_found")
    assert_error(client.delete(f"{ITEMS}/{item_id}"), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"limit": ""},
        {"offset": "-1"},
        {"offset": "1e3"},
        {"offset": "99999999999999999999"},
    ],
)
def test_bad_paging_parameters_are_a_400(client: FlaskClient, query: dict[str, str]) -> None:
    assert_error(client.get(ITEMS, query_string=query), 400, "invalid_parameter")


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nothing"), 404)
    body = assert_error(client.patch(ITEMS), 405)
    assert "method" in body["detail"].lower()
    resp = client.patch(ITEMS)
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_security_headers_and_request_id(client: FlaskClient) -> None:
    for path in ("/", ITEMS, "/healthz", "/api/v1/items/0", "/static/favicon.svg"):
        resp = client.get(path)
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        assert len(resp.headers["X-Request-ID"]) >= 16
        # What a document's scripts may do: on everything but JSON, which runs nothing.
        json_body = resp.mimetype == "application/json"
        assert ("Permissions-Policy" in resp.headers) is not json_body, path
        assert ("Cross-Origin-Opener-Policy" in resp.headers) is not json_body, path
        if json_body:
            csp = "default-src 'none'; frame-ancestors 'none'"
            assert resp.headers["Content-Security-Policy"] == csp
        if path.startswith("/api/"):
            assert resp.headers["Cache-Control"] == "no-store"
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == (
        "abc-123"
    )
    # A request id that could forge log lines is replaced, not echoed.
    resp = client.get("/healthz", headers={"X-Request-ID": 'x" evil\\n'})
    assert resp.headers["X-Request-ID"] != 'x" evil\\n'


def test_openapi_describes_every_api_route(client: FlaskClient, app) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, ops in spec["paths"].items()
        for method in ops
        if method != "parameters"
    }
    served = {
        (rule.rule.replace("<item_id>", "{item_id}"), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served <= documented


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}
