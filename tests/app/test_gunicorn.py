"""The service under real gunicorn with 2 workers: metrics across workers, logs, raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.gunicorn import GunicornServer


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


@pytest.fixture(scope="module")
def server(db_env) -> Iterator[GunicornServer]:
    """One 2-worker server for the module; each test measures its own deltas."""
    with GunicornServer(db_env, workers=2) as running:
        yield running


def workers_with_samples(server: GunicornServer) -> set[int]:
    return {
        int(m.group(1))
        for f in server.metrics_dir.iterdir()
        if (m := re.match(r"counter_(\d+)\.db$", f.name))
    }


def test_metrics_count_requests_of_both_workers(server: GunicornServer) -> None:
    workers = set(server.worker_pids())
    assert len(workers) == 2
    text = requests.get(server.url + "/metrics", timeout=5).text
    before = metric(text, "http_requests_total", route="/healthz", status="200")
    n = 0
    # New connections are spread over the workers by the kernel; keep going until both served.
    while workers_with_samples(server) < workers or n < 60:
        with requests.get(server.url + "/healthz", timeout=5, headers={"Connection": "close"}):
            n += 1
        assert n < 2000, f"requests never reached both workers: {workers_with_samples(server)}"
    assert workers_with_samples(server) >= workers

    # Every scrape, whichever worker answers it, reports all requests of both workers.
    for _ in range(6):
        text = requests.get(server.url + "/metrics", timeout=5).text
        assert metric(text, "http_requests_total", route="/healthz", status="200") == before + n
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, "http_request_duration_seconds_count", route="/healthz") == before + n


def test_metrics_use_route_templates_not_raw_paths(server: GunicornServer) -> None:
    text = requests.get(server.url + "/metrics", timeout=5).text
    before = metric(text, "http_requests_total", route="/api/v1/items/<item_id>")
    unmatched = metric(text, "http_requests_total", route="<unmatched>", status="404")
    for item_id in (1, 2, 3, 424242):
        requests.get(f"{server.url}/api/v1/items/{item_id}", timeout=5)
    requests.get(f"{server.url}/no/such/page/{time.time()}", timeout=5)
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, "http_requests_total", route="/api/v1/items/<item_id>") == before + 4
    assert metric(text, "http_requests_total", route="<unmatched>", status="404") == unmatched + 1
    assert "424242" not in text
    assert "/no/such/page" not in text


def test_metrics_directory_is_emptied_on_start(gunicorn_server, db_env, tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    env = {**db_env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    first = gunicorn_server(env, workers=1)
    for _ in range(5):
        requests.get(first.url + "/healthz", timeout=5)
    first.stop()
    assert any(directory.iterdir())
    second = gunicorn_server(env, workers=1)
    text = requests.get(second.url + "/metrics", timeout=5).text
    # Only the new server's own readiness checks remain, not the 5 requests from before.
    assert 1 <= metric(text, "http_requests_total", route="/healthz") < 5


def test_chunked_body_within_the_limit_is_read_whole(server: GunicornServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    description = "d" * 1_000  # the most an item takes, sent in 12 chunks
    chunks = (b'{"name": "chunked", "description": "', *[b"d" * 100] * 10, b'"}')
    conn.request(
        "POST",
        "/api/v1/items",
        body=iter(chunks),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 201, resp.read()
    created = json.loads(resp.read())
    conn.close()
    assert (created["name"], created["description"]) == ("chunked", description)


def test_chunked_oversized_body_is_a_413(server: GunicornServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def body():
        yield b'{"name": "x", "description": "'
        for _ in range(64):
            yield b"d" * 1024
        yield b'"}'

    conn.request(
        "POST",
        "/api/v1/items",
        body=body(),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"] == "request_entity_too_large"
    conn.close()
    listed = requests.get(server.url + "/api/v1/items?limit=100", timeout=5).json()["items"]
    assert all(len(item["description"]) < 60_000 for item in listed)


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/api/v1/items", "application/json"), ("/items", "application/x-www-form-urlencoded")],
    ids=["api", "form"],
)
@pytest.mark.parametrize(
    "body",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"9\r\n{}"],
    ids=["chunk-size-not-hex", "chunk-without-crlf", "cut-short"],
)
def test_a_chunked_body_that_cannot_be_read_is_a_400(
    server: GunicornServer, path: str, media_type: str, body: bytes
) -> None:
    """gunicorn finds a chunked body broken only when the app reads it."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        conn.shutdown(socket.SHUT_WR)  # nothing more comes: "cut-short" ends here
        answer = b""
        while chunk := conn.recv(65536):  # gunicorn closes the connection: no next request
            answer += chunk
    head_lines, _, content = answer.partition(b"\r\n\r\n")
    assert head_lines.split()[1] == b"400", answer
    assert b"\r\ncontent-type: application/json" in head_lines.lower(), answer
    assert json.loads(content)["error"] == "bad_request"
    assert "unhandled error" not in server.log()


def test_logs_are_json_with_the_request_id(server: GunicornServer) -> None:
    requests.get(server.url + "/healthz", headers={"X-Request-ID": "trace-me-42"}, timeout=5)
    requests.post(
        server.url + "/api/v1/items",
        data="{bad",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    time.sleep(0.5)  # the access line is written after the response is sent
    entries = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    access = [e for e in entries if e.get("logger") == "gunicorn.access"]
    assert any(e["request_id"] == "trace-me-42" and e["path"] == "/healthz" for e in access)
    assert any(e["status"] == 400 and e["method"] == "POST" for e in access)
    assert all("ts" in e and "level" in e for e in entries)


def test_no_secret_in_logs(gunicorn_server, postgres, db_env) -> None:
    server = gunicorn_server({"DATABASE_URL": postgres.dsn_for("no_such_db")}, workers=1)
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
    server.stop()
    assert postgres.password not in server.log()
    assert "database connection failed" in server.log()


TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"  # states as /proc/net/tcp writes them


def sockets_on_port(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 sockets whose local port is `port`, in TCP state `state`."""
    suffix = f":{port:04X}"
    return {
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if (fields := line.split())[1].endswith(suffix) and fields[3] == state
    }


def established_per_worker(server: GunicornServer) -> dict[int, int]:
    """Open connections to the server's port, by the worker process that holds them."""
    inodes = sockets_on_port(server.port, TCP_ESTABLISHED)
    counts = {}
    for pid in server.worker_pids():
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            held += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = held
    return counts


def test_keep_alive_connections_spread_over_the_workers(server: GunicornServer) -> None:
    """Each worker listens on its own socket (SO_REUSEPORT), and the kernel spreads new
    connections over them. On one shared socket, the worker that woke first took nearly
    all of a client's keep-alive connections (19 or 20 of wrk's 20), and the other
    worker's core stood idle."""
    connections = []
    try:
        for _ in range(40):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
            connections.append(conn)
        counts = established_per_worker(server)
    finally:
        for conn in connections:
            conn.close()
    # 40 connections hashed over 2 sockets: fewer than 8 on one has odds of about 1e-5.
    assert sum(counts.values()) == 40 and min(counts.values()) >= 8, counts


@pytest.mark.parametrize(("max_requests", "sockets"), [("0", 2), ("1000", 1)])
def test_a_socket_per_worker_unless_workers_are_recycled(
    db_env: dict[str, str], max_requests: str, sockets: int
) -> None:
    """A recycled worker would reset the connections queued on its own socket: with
    GUNICORN_MAX_REQUESTS the workers share the master's one socket, as before."""
    with GunicornServer({**db_env, "GUNICORN_MAX_REQUESTS": max_requests}, workers=2) as server:

        def listening() -> int:
            return len(sockets_on_port(server.port, TCP_LISTEN))

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            len(server.worker_pids()) == 2 and listening() >= sockets
        ):
            time.sleep(0.1)
        time.sleep(0.5)  # a second worker still booting would bind its socket now
        assert listening() == sockets


# Last: it kills a worker of the shared server.
def test_dead_worker_keeps_counts_and_drops_its_live_gauge(server: GunicornServer) -> None:
    for _ in range(40):
        requests.get(server.url + "/healthz", timeout=5, headers={"Connection": "close"})
    victim = server.worker_pids()[0]
    gauge_file = server.metrics_dir / f"gauge_livesum_{victim}.db"
    assert gauge_file.exists()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while (gauge_file.exists() or len(server.worker_pids()) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not gauge_file.exists(), "child_exit did not mark the dead worker"
    assert victim not in server.worker_pids()
    text = requests.get(server.url + "/metrics", timeout=5).text
    # The dead worker's requests are still counted: counters never go down.
    assert metric(text, "http_requests_total", route="/healthz") >= 40
    assert metric(text, "http_requests_in_progress") == 1  # only this scrape


def test_metrics_and_readiness_answer_only_on_the_admin_port(db_env: dict[str, str]) -> None:
    """What the Service, the NodePort and the Ingress reach (the public port) shows neither
    the metrics nor the readiness check; the admin port shows only those and /healthz."""
    with GunicornServer(db_env, workers=1, admin_port=True) as server:
        assert server.admin_url is not None
        for path in ("/metrics", "/readyz"):
            public = requests.get(server.url + path, timeout=5)
            assert public.status_code == 404, (path, public.text)
            assert public.json()["error"] == "not_found"
            assert public.headers["X-Content-Type-Options"] == "nosniff"
            assert requests.get(server.admin_url + path, timeout=5).status_code == 200
        # The Host header names the admin port, the socket is the public one: still refused.
        moved = requests.get(
            server.url + "/metrics", headers={"Host": f"127.0.0.1:{server.admin_port}"}, timeout=5
        )
        assert moved.status_code == 404
        for url in (server.url, server.admin_url):
            assert requests.get(url + "/healthz", timeout=5).status_code == 200
        assert requests.get(server.url + "/api/v1/items", timeout=5).status_code == 200
        for path in ("/api/v1/items", "/", "/openapi.json", "/no-such-page"):
            assert requests.get(server.admin_url + path, timeout=5).status_code == 404, path
        refused = metric(
            requests.get(server.admin_url + "/metrics", timeout=5).text,
            "http_requests_total",
            route="/metrics",
            status="404",
        )
        assert refused == 2
        # Another method tells no more: a 405 would show that the path exists.
        for method in ("POST", "DELETE"):
            for path in ("/metrics", "/readyz"):
                public = requests.request(method, server.url + path, timeout=5)
                assert public.status_code == 404, (method, path, public.status_code)
        assert requests.post(server.url + "/healthz", timeout=5).status_code == 405
