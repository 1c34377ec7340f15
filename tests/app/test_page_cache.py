"""Pages kept by a worker with their snapshot: served again only while nothing changed.

Every request still asks the database, so a write committed anywhere (this app, another
app on the same database standing for another pod, psql) is in the next page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from webapp import create_app, items
from webapp.snapshotcache import SnapshotCache

from tests.support.postgres import PostgresServer, TableReads, counted_reads

ITEMS = "/api/v1/items"


def pages_served(client: FlaskClient) -> dict[str, float]:
    """webapp_item_pages_total by source, as /metrics shows it."""
    text = client.get("/metrics").get_data(as_text=True)
    found = re.findall(r'^webapp_item_pages_total\{source="(\w+)"\} (\S+)$', text, re.M)
    return {"cache": 0.0, "table": 0.0} | {source: float(n) for source, n in found}


def names(client: FlaskClient, **query: object) -> list[str]:
    resp = client.get(ITEMS, query_string={"limit": 100, **query})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [row["name"] for row in resp.get_json()["items"]]


def lists_served(client: FlaskClient, expected: list[str], times: int) -> tuple[float, float]:
    """List `times` times, each answering `expected`: how many of those pages came from the
    worker's copy, and how many from the table."""
    before = pages_served(client)
    for _ in range(times):
        assert names(client) == expected
    after = pages_served(client)
    return after["cache"] - before["cache"], after["table"] - before["table"]


@pytest.fixture
def sql(db_env: dict[str, str]) -> Iterator[psycopg2.extensions.cursor]:
    """A connection of its own: a writer the app knows nothing about."""
    conn = psycopg2.connect(db_env["DATABASE_URL"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE items")
        yield cur
    conn.close()


@pytest.fixture
def other_pod(db_env: dict[str, str]) -> Iterator[FlaskClient]:
    other = create_app(db_env)
    yield other.test_client()
    other.extensions["webapp.db"].close()


def page_read(
    cur: psycopg2.extensions.cursor, params: tuple, held: str | None
) -> tuple[list, TableReads]:
    """What items_page answers, and what it did to the table."""

    def read() -> list:
        cur.execute(items._PAGE.execute, (*params, held))
        return cur.fetchall()

    return counted_reads(cur, "items", read)


@pytest.mark.parametrize(
    "params", [(False, 0, 25, 0), (True, items.ID_MAX, 25, 0)], ids=["api", "html-page"]
)
def test_a_held_page_still_current_is_answered_without_starting_its_query(
    sql, params: tuple
) -> None:
    """What the cache saves the database: given the snapshot its page was read in, the
    page function answers no row and neither scans nor locks the table (a statement whose
    scans a condition rules out still locks it), with the plans the app's connections
    get (generic)."""
    sql.execute("INSERT INTO items (name) SELECT 'row ' || n FROM generate_series(1, 30) n")
    sql.execute("SET plan_cache_mode = force_generic_plan")
    sql.execute(items._PAGE.prepare)
    for _ in range(5):  # a write elsewhere on the server between the two changes the snapshot
        [(held, page, *_)], read = page_read(sql, params, None)
        answer, held_read = page_read(sql, params, held)
        if not answer:
            break
    assert held and len(json.loads(page)) == 25, held
    assert read.scans >= 1 and read.locked, read
    assert (answer, held_read) == ([], TableReads(scans=0, seq_scans=0, locked=False))


def test_nothing_is_kept_from_a_standby(postgres: PostgresServer, db_env, sql) -> None:
    """A standby's snapshot does not list the transactions in progress on the primary, so
    it cannot tell a change: the page function answers no snapshot there, and every list
    reads the table."""
    sql.execute("INSERT INTO items (name) VALUES ('replayed')")
    standby = postgres.standby().start()
    replica = None
    try:
        dbname = db_env["DATABASE_URL"].rsplit("/", 1)[1]
        replica = create_app({"DATABASE_URL": standby.dsn_for(dbname)})
        assert lists_served(replica.test_client(), ["replayed"], times=3) == (0, 3)
        assert len(replica.extensions["webapp.items"].pages) == 0
    finally:
        if replica is not None:
            replica.extensions["webapp.db"].close()
        standby.destroy()


def test_an_unchanged_page_is_served_again(client: FlaskClient, sql) -> None:
    sql.execute("INSERT INTO items (name) SELECT 'row ' || n FROM generate_series(1, 30) n")
    first = client.get(ITEMS, query_string={"limit": 25}).get_data()
    before = pages_served(client)
    # Any transaction that writes anywhere on this server (autovacuum's ANALYZE too) makes
    # the next page be read again: a few tries, and every answer is the same page.
    for _ in range(5):
        assert client.get(ITEMS, query_string={"limit": 25}).get_data() == first
    after = pages_served(client)
    assert after["cache"] - before["cache"] >= 3
    assert after["cache"] + after["table"] - before["cache"] - before["table"] == 5


def test_a_page_is_not_reused_on_a_connection_opened_since(app: Flask, client, sql) -> None:
    """A server that crashed and recovered keeps its start time and may hand out the
    transaction numbers of commits it lost again: its snapshots can repeat. It broke
    every connection, so a page is only reused while no connection was opened since."""
    sql.execute("INSERT INTO items (name) VALUES ('kept')")
    for _ in range(3):
        assert names(client) == ["kept"]
    app.extensions["webapp.db"].close()  # the pool is empty: the next list connects
    assert lists_served(client, ["kept"], times=1) == (0, 1)


def test_writes_from_anywhere_are_in_the_next_page(
    app: Flask, client: FlaskClient, other_pod: FlaskClient, sql
) -> None:
    sql.execute("INSERT INTO items (name) VALUES ('a'), ('b')")
    assert names(client) == ["a", "b"]
    assert names(client) == ["a", "b"]  # held now

    sql.execute("INSERT INTO items (name) VALUES ('c')")
    assert names(client) == ["a", "b", "c"]
    sql.execute("UPDATE items SET name = 'B' WHERE name = 'b'")
    assert names(client) == ["a", "B", "c"]
    sql.execute("DELETE FROM items WHERE name = 'a'")
    assert names(client) == ["B", "c"]

    made = other_pod.post(ITEMS, json={"name": "from the other pod"})
    assert made.status_code == 201
    assert names(client) == ["B", "c", "from the other pod"]
    html = client.get("/").get_data(as_text=True)
    assert "from the other pod" in html
    other_pod.delete(made.headers["Location"])
    assert names(client) == ["B", "c"]
    assert "from the other pod" not in client.get("/").get_data(as_text=True)


def test_an_aborted_write_leaves_the_page_as_it_was(client: FlaskClient, sql) -> None:
    sql.execute("INSERT INTO items (name) VALUES ('kept')")
    assert names(client) == ["kept"]
    sql.execute("BEGIN")
    sql.execute("INSERT INTO items (name) VALUES ('rolled back')")
    assert names(client) == ["kept"]  # not committed: not seen
    sql.execute("ROLLBACK")
    assert names(client) == ["kept"]


def test_without_a_budget_every_page_is_read_from_the_table(db_env: dict[str, str], sql) -> None:
    sql.execute("INSERT INTO items (name) VALUES ('x')")
    uncached = create_app({**db_env, "WEBAPP_PAGE_CACHE_BYTES": "0"})
    try:
        assert lists_served(uncached.test_client(), ["x"], times=3) == (0, 3)
    finally:
        uncached.extensions["webapp.db"].close()


def test_the_cache_keeps_the_most_recently_used_within_its_budget() -> None:
    cache: SnapshotCache[str] = SnapshotCache(budget_bytes=300)
    for key in "abc":
        cache.put(key, "1:1:", key * 100, size=100)
    assert cache.get("a") == ("1:1:", "a" * 100)  # a is now the most recently used
    cache.put("d", "2:2:", "d" * 100, size=100)
    assert cache.get("b") is None  # the least recently used went
    assert [cache.get(key) is not None for key in "acd"] == [True, True, True]
    cache.put("a", "3:3:", "a" * 250, size=250)  # replacing counts the new size only
    assert (len(cache), cache.get("a")) == (1, ("3:3:", "a" * 250))
    cache.put("e", "4:4:", "too big", size=301)
    assert (len(cache), cache.get("e")) == (1, None)
