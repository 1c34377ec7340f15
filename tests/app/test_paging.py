"""Keyset paging: cursors through the API and the HTML page, and a cost that does not
grow with depth, shown by the pages PostgreSQL reads rather than by a timer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from webapp import items
from webapp.db import Cursor

from tests.support.postgres import TableReads, counted_reads

ITEMS = "/api/v1/items"
ROWS = 200_000


@pytest.fixture(scope="module")
def loaded(db_env: dict[str, str]) -> Iterator[psycopg2.extensions.connection]:
    """The module's table filled with ROWS items, ids 1..ROWS, planned from real statistics."""
    conn = psycopg2.connect(db_env["DATABASE_URL"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (name, description) "
            "SELECT 'row ' || n, 'loaded' FROM generate_series(1, %s) AS n",
            (ROWS,),
        )
        cur.execute("ANALYZE items")
    yield conn
    conn.close()


def get_page(client: FlaskClient, **query: object) -> tuple[dict, dict]:
    resp = client.get(ITEMS, query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json(), dict(resp.headers)


def test_next_walks_every_item_once_in_order(client: FlaskClient, loaded) -> None:
    body, _ = get_page(client, limit=100, after=items.encode_cursor(ROWS - 250))
    seen = [row["id"] for row in body["items"]]
    while body["next"] is not None:
        body, headers = get_page(client, limit=100, after=body["next"])
        assert "offset" not in body and "next_offset" not in body
        assert "Deprecation" not in headers
        seen += [row["id"] for row in body["items"]]
    assert seen == list(range(ROWS - 249, ROWS + 1))


def test_last_page_and_past_the_end(client: FlaskClient, loaded) -> None:
    body, _ = get_page(client, limit=5, after=items.encode_cursor(ROWS - 5))
    assert [row["id"] for row in body["items"]] == list(range(ROWS - 4, ROWS + 1))
    assert body["next"] is None
    # A cursor past the last possible id is the end, not an error.
    body, _ = get_page(client, after="i" + "f" * 16)
    assert body == {"items": [], "limit": items.LIMIT_DEFAULT, "next": None}


def test_offset_still_works_but_is_deprecated(client: FlaskClient, loaded) -> None:
    body, headers = get_page(client, limit=3, offset=ROWS - 4)
    assert [row["id"] for row in body["items"]] == [ROWS - 3, ROWS - 2, ROWS - 1]
    assert (body["offset"], body["next_offset"]) == (ROWS - 4, ROWS - 1)
    # RFC 9745: a date, "@" and seconds since the epoch.
    assert re.fullmatch(r"@\d{10}", headers["Deprecation"])
    assert 'rel="deprecation"' in headers["Link"]
    # Its `next` cursor continues where the offset page ended: clients can switch.
    body, _ = get_page(client, limit=3, after=body["next"])
    assert [row["id"] for row in body["items"]] == [ROWS]
    # The first page without parameters keeps the fields old clients follow.
    body, headers = get_page(client, limit=2)
    assert (body["offset"], body["next_offset"]) == (0, 2)
    assert body["next"] == items.encode_cursor(2)
    assert "Deprecation" not in headers
    # With both, the offset counts from the cursor.
    body, _ = get_page(client, limit=2, after=items.encode_cursor(10), offset=5)
    assert [row["id"] for row in body["items"]] == [16, 17]


@pytest.mark.parametrize(
    "cursor", ["", "i", "x10", "I10", "i-1", "i10 ", "i" + "0" * 17, "aTE6Mg", "i1g", "ï1"]
)
def test_a_cursor_the_service_did_not_make_is_a_400(client: FlaskClient, cursor: str) -> None:
    resp = client.get(ITEMS, query_string={"after": cursor})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_parameter"
    assert "'after'" in resp.get_json()["detail"]


def buffers(app: Flask, params: tuple) -> int:
    """Shared buffers one page read takes (no page held), on a connection of the service's
    own pool; it reads no table from end to end."""

    def explain(cur: Cursor) -> tuple[dict, TableReads]:
        cur.run(items._PAGE, (*params, None))  # prepared the way every request prepares it

        def read() -> dict:
            cur.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {items._PAGE.execute}", (*params, None)
            )
            return cur.fetchone()[0][0]["Plan"]

        return counted_reads(cur, "items", read)

    plan, reads = app.extensions["webapp.db"].run(explain)
    assert reads.scans >= 1 and reads.seq_scans == 0, (reads, plan)
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


def test_a_deep_page_reads_what_the_first_page_reads(app: Flask, loaded) -> None:
    first = buffers(app, (False, 0, 100, 0))
    deep = buffers(app, (False, ROWS - 100, 100, 0))
    by_offset = buffers(app, (False, 0, 100, ROWS - 100))
    assert deep <= first + 2, (first, deep)
    # The HTML page's direction: newest first, from the top and from the bottom.
    newest, oldest = buffers(app, (True, items.ID_MAX, 100, 0)), buffers(app, (True, 100, 100, 0))
    assert oldest <= newest + 2, (newest, oldest)
    # The same depth by offset reads every page it skips: the comparison can fail.
    assert by_offset > 50 * first, (first, by_offset)


def test_requests_are_not_planned_again(app: Flask, client: FlaskClient, loaded) -> None:
    """The page function's call is prepared once and never planned again. (The query inside
    the function is planned by PL/pgSQL under the same connection setting, which
    pg_prepared_statements does not show.)"""
    for after in range(0, 5000, 500):
        get_page(client, after=items.encode_cursor(after))

    def plans(cur: Cursor) -> tuple[int, int]:
        cur.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = %s",
            (items._PAGE.name,),
        )
        return cur.fetchone()

    generic, custom = app.extensions["webapp.db"].run(plans)
    assert (generic >= 10, custom) == (True, 0)


def test_timestamps_are_rfc3339_in_utc(client: FlaskClient, loaded) -> None:
    made = client.post(ITEMS, json={"name": "stamped"}).get_json()
    for stamp in (made["created_at"], made["updated_at"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00", stamp), stamp
        moment = datetime.fromisoformat(stamp)
        assert abs((datetime.now(UTC) - moment).total_seconds()) < 60
    body, _ = get_page(client, after=items.encode_cursor(made["id"] - 1), limit=1)
    assert body["items"] == [made]


def test_html_page_goes_to_older_and_back_to_newer_items(client: FlaskClient, loaded) -> None:
    def ids(html: str) -> list[int]:
        return [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", html)]

    def link(html: str, rel: str) -> str | None:
        found = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
        return found.group(1).replace("&amp;", "&") if found else None

    newest = client.get("/").get_data(as_text=True)
    top = max(ids(newest))
    assert ids(newest) == list(range(top, top - 100, -1))
    assert link(newest, "prev") is None
    older = client.get(link(newest, "next")).get_data(as_text=True)
    assert ids(older) == list(range(top - 100, top - 200, -1))
    back = client.get(link(older, "prev")).get_data(as_text=True)
    assert ids(back) == ids(newest)
    # The oldest page has no older link.
    oldest = client.get("/", query_string={"before": items.encode_cursor(51)}).get_data(
        as_text=True
    )
    assert ids(oldest) == list(range(50, 0, -1))
    assert link(oldest, "next") is None
    assert link(oldest, "prev") is not None


@pytest.mark.parametrize("query", [{"before": "i1"}, {"after": "i" + "f" * 16}])
def test_html_page_past_either_end_shows_the_newest(client: FlaskClient, loaded, query) -> None:
    resp = client.get("/", query_string=query)
    assert resp.status_code == 200
    assert 'rel="next"' in resp.get_data(as_text=True)  # older items exist


def test_html_page_with_a_broken_link_says_so(client: FlaskClient, loaded) -> None:
    resp = client.get("/", query_string={"before": "not-a-cursor"})
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "not valid" in html
    assert 'rel="next"' in html  # and the newest items are shown
