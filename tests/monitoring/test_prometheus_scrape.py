"""The real Prometheus scrapes the real service (gunicorn, 2 workers, real PostgreSQL)
while a bounded load runs on 127.0.0.1; every query of the dashboard and of the alert rules
must then return data from that Prometheus.

The load has three phases: healthy traffic with some 4xx, PostgreSQL stopped (the API and
/readyz answer 503: the API's are the 5xx of the error-rate panel and of HighErrorRate, which
leave the probes out, /readyz's are InstanceNotReady's), PostgreSQL back.
A second target nobody listens on stands for a dead instance (InstanceDown). No request
takes a second, so HighLatency's threshold is not crossed: its p95 expression must return
data, the comparison is covered by the promtool unit tests.

The kube-state-metrics alerts (PodCrashLooping, NodeMemoryPressure, NodeDiskPressure) cannot
get data without a cluster: here Prometheus only proves it evaluates them without error; their
behaviour is covered by the promtool unit tests (rules_test.yml).
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import migrate
from tests.monitoring.prometheus import PrometheusServer
from tests.monitoring.sources import (
    RULE_FILES,
    Alert,
    PanelQuery,
    alerts,
    operational_routes,
    panel_queries,
    signal_of,
)
from tests.support.gunicorn import GunicornServer
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

APP_ALERTS = {"HighErrorRate", "HighLatency", "InstanceNotReady", "InstanceDown", "ServiceDown"}
# An absent() alert has no signal while the service is served: it must return nothing.
SILENT_WHILE_SERVED = {"ServiceDown"}
# The load makes these conditions true, so their full expressions (threshold included) fire.
CONDITIONS_MET = {"HighErrorRate", "InstanceDown"}
THREADS = 4
PHASES = (("healthy", 8.0), ("database-down", 6.0), ("recovered", 4.0))

Key = tuple[str, str, str]  # method, route template, status


@dataclass
class Load:
    """What the load generator sent, as the service should have counted it."""

    sent: Counter[Key] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, route: str, status: int) -> None:
        with self.lock:
            self.sent[(method, route, str(status))] += 1


@dataclass
class Scraped:
    prometheus: PrometheusServer
    load: Load
    live_instance: str
    dead_instance: str
    series_per_worker: dict[int, int]


def call(base: str, method: str, path: str, body: object = None) -> int:
    # A new connection per request, so that both workers get a share of the load.
    headers = {"Connection": "close"}
    return requests.request(method, base + path, json=body, headers=headers, timeout=10).status_code


def one_request(base: str, item_ids: list[int], rng: random.Random, load: Load) -> None:
    """One request of the mix: reads and writes, missing items, bad bodies, unknown paths,
    and as many liveness probes, which answer 200 throughout."""
    kind = rng.choices(
        ["list", "get", "create", "missing", "invalid", "ready", "unknown", "alive"],
        weights=[30, 20, 10, 10, 10, 15, 5, 100],
    )[0]
    if kind == "alive":
        load.record("GET", "/healthz", call(base, "GET", "/healthz"))
    elif kind == "list":
        load.record("GET", "/api/v1/items", call(base, "GET", "/api/v1/items?limit=5"))
    elif kind == "get":
        item = rng.choice(item_ids)
        load.record("GET", "/api/v1/items/<item_id>", call(base, "GET", f"/api/v1/items/{item}"))
    elif kind == "create":
        status = call(base, "POST", "/api/v1/items", {"name": f"load-{rng.random():.6f}"})
        load.record("POST", "/api/v1/items", status)
    elif kind == "missing":
        status = call(base, "GET", "/api/v1/items/999999999")
        load.record("GET", "/api/v1/items/<item_id>", status)
    elif kind == "invalid":
        load.record("POST", "/api/v1/items", call(base, "POST", "/api/v1/items", {"nope": 1}))
    elif kind == "ready":
        load.record("GET", "/readyz", call(base, "GET", "/readyz"))
    else:
        load.record("GET", "<unmatched>", call(base, "GET", "/no/such/page"))


def run_load(base: str, item_ids: list[int], seconds: float, load: Load) -> None:
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            one_request(base, item_ids, rng, load)
            time.sleep(0.005)  # bounded: a few hundred requests per second at most

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, seed) for seed in range(THREADS)]:
            future.result()


def series_per_worker(metrics_dir: Path) -> dict[int, int]:
    """Samples each worker keeps in its multiprocess files (counter, histogram, gauge)."""
    counts: Counter[int] = Counter()
    for path in metrics_dir.glob("*.db"):
        pid = int(re.search(r"_(\d+)\.db$", path.name).group(1))
        counts[pid] += sum(1 for _ in MmapedDict.read_all_values_from_file(str(path)))
    return dict(counts)


@pytest.fixture(scope="module")
def scraped() -> Iterator[Scraped]:
    postgres = PostgresServer().start()
    server: GunicornServer | None = None
    prometheus: PrometheusServer | None = None
    try:
        env = {"DATABASE_URL": postgres.create_database("webapp_monitoring")}
        result = migrate(env)
        assert result.returncode == 0, result.stderr
        server = GunicornServer(env, workers=2).start()
        live = f"127.0.0.1:{server.port}"
        dead = f"127.0.0.1:{free_port()}"
        prometheus = PrometheusServer(
            scrape_configs=[
                {
                    "job_name": "webapp",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [live, dead]}],
                }
            ],
            rule_files=RULE_FILES,
        ).start()
        prometheus.wait_for(f'up{{job="webapp", instance="{live}"}} == 1')

        load = Load()
        item_ids = []
        for n in range(5):
            resp = requests.post(
                server.url + "/api/v1/items", json={"name": f"seed-{n}"}, timeout=10
            )
            assert resp.status_code == 201, resp.text
            item_ids.append(resp.json()["id"])
            load.record("POST", "/api/v1/items", 201)

        for phase, seconds in PHASES:
            if phase == "database-down":
                postgres.stop()
            elif phase == "recovered":
                postgres.start()
            run_load(server.url, item_ids, seconds, load)
        # Two more scrapes and rule evaluations after the last request.
        time.sleep(2.5)
        yield Scraped(prometheus, load, live, dead, series_per_worker(server.metrics_dir))
    finally:
        if prometheus is not None:
            prometheus.cleanup()
        if server is not None:
            server.cleanup()
        postgres.destroy()


def finite(samples: list[dict]) -> list[float]:
    return [float(s["value"][1]) for s in samples if math.isfinite(float(s["value"][1]))]


def test_the_load_produced_successes_4xx_and_5xx(scraped: Scraped) -> None:
    statuses = Counter()
    for (_, _, status), n in scraped.load.sent.items():
        statuses[status[0] + "xx"] += n
    assert statuses["2xx"] > 100
    assert statuses["4xx"] > 20
    assert statuses["5xx"] > 20


def test_prometheus_counted_exactly_what_was_sent(scraped: Scraped) -> None:
    """Both workers' counters, merged by the multiprocess collector, reach Prometheus whole."""
    # The scrape's requests, and the fixture's own /healthz polls while gunicorn starts, are
    # not the load's.
    samples = scraped.prometheus.query(
        'http_requests_total{job="webapp", route!~"/metrics|/healthz"}'
    )
    seen = {
        (s["metric"]["method"], s["metric"]["route"], s["metric"]["status"]): int(
            float(s["value"][1])
        )
        for s in samples
    }
    assert seen == {key: n for key, n in scraped.load.sent.items() if key[1] != "/healthz"}
    (alive,) = scraped.prometheus.query(
        'http_requests_total{job="webapp", route="/healthz", status="200"}'
    )
    assert int(float(alive["value"][1])) >= scraped.load.sent[("GET", "/healthz", "200")] > 0


def test_both_workers_served_requests(scraped: Scraped) -> None:
    assert len(scraped.series_per_worker) == 2, scraped.series_per_worker
    assert all(n > 0 for n in scraped.series_per_worker.values())


def test_every_list_served_is_one_item_page_from_the_copy_or_the_table(scraped: Scraped) -> None:
    """The page panel's counter: each list answered 200 counted once, under its source.

    The load writes between lists (its creates), so some lists read the table; lists in a
    row with no write between them are served from the worker's copy."""
    samples = scraped.prometheus.query('sum by (source) (webapp_item_pages_total{job="webapp"})')
    pages = {s["metric"]["source"]: int(float(s["value"][1])) for s in samples}
    lists = scraped.load.sent[("GET", "/api/v1/items", "200")]
    assert sum(pages.values()) == lists, pages
    assert pages["cache"] > 0 and pages["table"] > 0, pages


@pytest.mark.parametrize("query", panel_queries(), ids=lambda q: f"{q.panel}/{q.ref_id}")
def test_every_dashboard_query_returns_data(scraped: Scraped, query: PanelQuery) -> None:
    values = finite(scraped.prometheus.query(query.promql()))
    assert values, f"{query.panel}: no finite value for {query.promql()}"


def test_the_error_rate_panel_reports_the_5xx_share(scraped: Scraped) -> None:
    (gauge,) = [q for q in panel_queries() if q.panel == "Error rate (5xx)"]
    (value,) = finite(scraped.prometheus.query(gauge.promql()))

    def share_of_5xx(sent: dict[Key, int]) -> float:
        return sum(n for key, n in sent.items() if key[2].startswith("5")) / sum(sent.values())

    # The clients' requests: the load's probes (liveness and readiness) left out.
    probes = operational_routes()
    clients = {key: n for key, n in scraped.load.sent.items() if key[1] not in probes}
    # rate() extrapolates at the window's edges; the share must still be close, and far
    # from the share among all requests, which the probes' 200s dilute.
    assert value == pytest.approx(share_of_5xx(clients), abs=0.05)
    assert abs(share_of_5xx(dict(scraped.load.sent)) - share_of_5xx(clients)) > 0.1
    assert value > 0.05


APP_RULES = [a for a in alerts() if a.name in APP_ALERTS - SILENT_WHILE_SERVED]
CLUSTER_RULES = [a for a in alerts() if a.name not in APP_ALERTS]


@pytest.mark.parametrize("alert", APP_RULES, ids=lambda a: a.name)
def test_every_app_alert_expression_returns_data(scraped: Scraped, alert: Alert) -> None:
    assert finite(scraped.prometheus.query(signal_of(alert.expr))), signal_of(alert.expr)
    if alert.name in CONDITIONS_MET:
        assert scraped.prometheus.query(alert.expr), f"{alert.name}: condition not met"


def test_instance_down_names_the_dead_target_only(scraped: Scraped) -> None:
    (alert,) = [a for a in alerts() if a.name == "InstanceDown"]
    down = {s["metric"]["instance"] for s in scraped.prometheus.query(alert.expr)}
    assert down == {scraped.dead_instance}


def test_service_down_is_silent_while_one_instance_answers(scraped: Scraped) -> None:
    """A dead target (InstanceDown's) beside a live one: the service is still served."""
    (alert,) = [a for a in alerts() if a.name == "ServiceDown"]
    assert scraped.prometheus.query(alert.expr) == []
    assert scraped.prometheus.query(alert.expr.replace('job="webapp"', 'job="nobody"'))


def test_prometheus_evaluates_the_loaded_rules(scraped: Scraped) -> None:
    groups = scraped.prometheus.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {a.name for a in alerts()}
    assert all(r["health"] == "ok" for r in rules.values()), rules
    # `for:` keeps them pending during a test this short.
    assert rules["HighErrorRate"]["state"] == "pending"
    assert rules["InstanceDown"]["state"] == "pending"
    assert rules["HighLatency"]["state"] == "inactive"
    assert rules["ServiceDown"]["state"] == "inactive"


@pytest.mark.parametrize("alert", CLUSTER_RULES, ids=lambda a: a.name)
def test_cluster_alert_expressions_are_accepted(scraped: Scraped, alert: Alert) -> None:
    # No kube-state-metrics here: an empty but valid answer (the unit tests cover the logic).
    assert scraped.prometheus.query(alert.expr) == []


def test_report_scrape_figures(scraped: Scraped, record_property) -> None:
    prom = scraped.prometheus
    live = scraped.live_instance
    selector = f'{{job="webapp", instance="{live}"}}'
    (avg,) = finite(prom.query(f"avg_over_time(scrape_duration_seconds{selector}[5m])"))
    (peak,) = finite(prom.query(f"max_over_time(scrape_duration_seconds{selector}[5m])"))
    (samples,) = finite(prom.query(f"scrape_samples_scraped{selector}"))
    figures = {
        "scrape_duration_avg_ms": round(avg * 1000, 2),
        "scrape_duration_max_ms": round(peak * 1000, 2),
        "series_per_scrape": int(samples),
        "multiprocess_samples_per_worker": scraped.series_per_worker,
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nscrape figures: {figures}")
    assert avg < 1.0, "a scrape takes longer than the 1 s interval"
