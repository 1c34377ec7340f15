#!/usr/bin/env bash
# Benchmark of the service under gunicorn (2 workers, app/gunicorn.conf.py) on a
# local PostgreSQL 15, measured with wrk (20 connections, 15 s per target):
#   hello     a minimal Flask app under the same gunicorn settings (the ceiling)
#   plain     the same minimal app listing the same 100 rows the plain way (a psycopg2
#             pool, RealDictCursor, jsonify): what the list costs without our work
#   healthz   /healthz (no database)
#   list      GET /api/v1/items?limit=100, the first page of a 100-row table: the
#             table does not change, so each worker serves the page it holds after
#             asking the database whether its snapshot is still the current one
#   uncached  the same with the page cache off (WEBAPP_PAGE_CACHE_BYTES=0): what every
#             list costs when the table has changed since the worker last read it
#   create    POST /api/v1/items (database write, into a table of its own)
#   deep      the last page (limit=100) of a 1,000,000-row table, by cursor (`after`),
#             cache off: compared with `uncached`, the first page of a 100-row table
#   offset    the same page by the deprecated `offset`, for comparison: run once, last
#             (its slow queries would still run in the next target's slice), judged
#             by CPU per request since its latency is mostly queueing
# Prints req/s and its ratio to hello, p50 and p99 latency, the CPU time per request
# of gunicorn's workers (app us) and of PostgreSQL (db us), hello's CPU per request
# as a share of the target's (less sensitive to other load on the machine than
# req/s), non-2xx and socket errors; then each aim against its figure. Cleans up.
#   usage: bench/app.sh [SECONDS_PER_TARGET] [CONNECTIONS]   (BENCH_ROUNDS=5 slices each)
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the run too

root=$(cd "$(dirname "$0")/.." && pwd)
duration=${1:-15}
connections=${2:-20}
rounds=${BENCH_ROUNDS:-5}
export PATH="$root/.venv/bin:$PATH"
pg_bin=/usr/lib/postgresql/15/bin

for tool in wrk gunicorn python3 "$pg_bin/pg_ctl"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (run make setup)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/bench-app.XXXXXX)
pids=()
as_postgres=()
if [[ $(id -u) -eq 0 ]]; then
  as_postgres=(runuser -u postgres --)
  chown postgres: "$work"
fi

cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -f $work/pg/postmaster.pid ]]; then
    "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
  local url=$1
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "bench: $url did not answer" >&2
  return 1
}

echo "bench: starting PostgreSQL 15"
pg_port=$(free_port)
"${as_postgres[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
"${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
psql_at() {  # database sql
  psql -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d "$1" -c "$2"
}
database_with_rows() {  # name rows -> prints its DATABASE_URL
  local url="postgresql://postgres@127.0.0.1:$pg_port/$1"
  psql_at postgres "CREATE DATABASE $1" >/dev/null
  DATABASE_URL=$url PYTHONPATH="$root/app" python3 -m webapp.migrate >/dev/null
  psql_at "$1" "INSERT INTO items (name, description)
    SELECT 'bench row ' || n, 'loaded by bench/app.sh' FROM generate_series(1, $2) AS n" >/dev/null
  psql_at "$1" "VACUUM ANALYZE items" >/dev/null
  echo "$url"
}
echo "bench: loading a 100-row and a 1,000,000-row table"
postmaster=$(head -1 "$work/pg/postmaster.pid")
small_db=$(database_with_rows small 100)
big_db=$(database_with_rows big 1000000)
writes_db=$(database_with_rows writes 0)
# The load leaves hundreds of MB to write out: write them now, not during the slices.
psql_at postgres CHECKPOINT >/dev/null

start_gunicorn() {  # name module dir [DATABASE_URL [PAGE_CACHE_BYTES]] -> sets $url and $master
  local name=$1 module=$2 dir=$3 database=${4:-} cache_bytes=${5:-} port
  port=$(free_port)
  mkdir -p "$work/$name-prom"
  DATABASE_URL=$database WEBAPP_PAGE_CACHE_BYTES=$cache_bytes PYTHONPATH="$dir" \
    PROMETHEUS_MULTIPROC_DIR="$work/$name-prom" \
    GUNICORN_BIND="127.0.0.1:$port" GUNICORN_WORKERS=2 \
    gunicorn -c "$root/app/gunicorn.conf.py" --chdir "$dir" "$module" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  master=$!
  url="http://127.0.0.1:$port"
}

# CPU time (clock ticks) used so far by the children of process $1 (gunicorn's
# workers, PostgreSQL's backends): unlike req/s it hardly depends on what else the
# machine is doing during the run. Pooled backends live through a whole slice.
child_ticks() {
  local total=0 child children stat
  read -r -a children <"/proc/$1/task/$1/children" || true  # no newline at its end
  for child in "${children[@]}"; do
    # A child may exit between the listing and the read (an autovacuum worker).
    stat=$(sed 's/.*) //' "/proc/$child/stat" 2>/dev/null) || true
    [[ -n $stat ]] || continue
    total=$((total + $(awk '{print $12 + $13}' <<<"$stat")))
  done
  echo "$total"
}

# The ceiling: the smallest Flask app, same gunicorn settings; and the same app
# listing 100 rows as most Flask services do.
mkdir -p "$work/hello"
cat >"$work/hello/hello.py" <<'PY'
import os

import psycopg2.extras
import psycopg2.pool
from flask import Flask, jsonify

app = Flask(__name__)
# minconn = the worker's 4 threads: psycopg2's pool closes connections above minconn.
pool = psycopg2.pool.ThreadedConnectionPool(4, 8, os.environ["DATABASE_URL"])


@app.get("/")
def hello() -> str:
    return "hello"


@app.get("/items")
def items():
    conn = pool.getconn()
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT id, name, description, created_at, updated_at FROM items"
                        " ORDER BY id LIMIT 100")
            rows = cur.fetchall()
        conn.commit()
    finally:
        pool.putconn(conn)
    return jsonify(items=rows)
PY
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"name": "bench item ' .. counter .. '", "description": "written by wrk"}')
end
LUA

start_gunicorn hello hello:app "$work/hello" "$small_db"
hello_url=$url
hello_master=$master
start_gunicorn small webapp.wsgi:app "$root/app" "$small_db"
small_url=$url
small_master=$master
start_gunicorn uncached webapp.wsgi:app "$root/app" "$small_db" 0
uncached_url=$url
uncached_master=$master
start_gunicorn big webapp.wsgi:app "$root/app" "$big_db" 0
big_url=$url
big_master=$master
start_gunicorn writes webapp.wsgi:app "$root/app" "$writes_db"
writes_url=$url
writes_master=$master
wait_http "$hello_url/"
wait_http "$small_url/healthz"
wait_http "$uncached_url/healthz"
wait_http "$big_url/healthz"
wait_http "$writes_url/healthz"
# The last page's cursor is what the page before it answers as `next`.
deep_cursor=$(curl -fsS "$big_url/api/v1/items?limit=100&offset=999800" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["next"] or "")')
[[ -n $deep_cursor ]] || { echo "bench: the big table has no last page" >&2; exit 1; }

# The machine may be busy with other work whose load changes from minute to minute, so
# the targets take turns: each gets $rounds slices of duration/rounds, interleaved,
# and every target sees the same mix of quiet and busy moments.
slice=$((duration / rounds))
((slice >= 1)) || { echo "bench: duration must be at least $rounds seconds" >&2; exit 2; }
mkdir -p "$work/out"
run_slice() {  # label master url round [lua]
  local label=$1 pid=$2 target=$3 round=$4 script=${5:-} out=$work/out/$1.$4
  local args=(-t2 "-c$connections" "-d${slice}s" --latency)
  [[ -n $script ]] && args+=(-s "$script")
  echo "bench: round $round, $label ($target)" >&2
  {
    echo "ticks_before $(child_ticks "$pid") $(child_ticks "$postmaster")"
    wrk "${args[@]}" "$target"
    echo "ticks_after $(child_ticks "$pid") $(child_ticks "$postmaster")"
  } >"$out"
}

for round in $(seq 1 "$rounds"); do
  run_slice hello "$hello_master" "$hello_url/" "$round"
  run_slice plain "$hello_master" "$hello_url/items" "$round"
  run_slice healthz "$small_master" "$small_url/healthz" "$round"
  run_slice list "$small_master" "$small_url/api/v1/items?limit=100" "$round"
  run_slice uncached "$uncached_master" "$uncached_url/api/v1/items?limit=100" "$round"
  run_slice deep "$big_master" "$big_url/api/v1/items?limit=100&after=$deep_cursor" "$round"
  run_slice create "$writes_master" "$writes_url/api/v1/items" "$round" "$work/post.lua"
done
run_slice offset "$big_master" "$big_url/api/v1/items?limit=100&offset=999900" 1

created=$(psql_at writes 'SELECT count(*) FROM items')
echo
echo "wrk: $connections connections, ${duration}s per target ($rounds interleaved slices)," \
  "gunicorn 2 workers (gthread)"
python3 - "$work/out" "$(getconf CLK_TCK)" <<'PY'
import re
import statistics
import sys
from pathlib import Path

out, clk_tck = Path(sys.argv[1]), int(sys.argv[2])
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * UNIT_MS[unit]


rows = {}
for label in ("hello", "plain", "healthz", "list", "uncached", "create", "deep", "offset"):
    count = seconds = ticks = db_ticks = non2xx = errors = 0
    p50s, p99 = [], 0.0
    for path in sorted(out.glob(f"{label}.*")):
        text = path.read_text()
        done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
        count += int(done.group(1))
        seconds += float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
        after = re.search(r"ticks_after (\d+) (\d+)", text)
        before = re.search(r"ticks_before (\d+) (\d+)", text)
        ticks += int(after.group(1)) - int(before.group(1))
        db_ticks += int(after.group(2)) - int(before.group(2))
        p50s.append(ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)))
        # The slowest slice's p99: the figure a user would meet on a busy minute.
        p99 = max(p99, ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)))
        if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
            non2xx += int(m.group(1))
        if m := re.search(r"Socket errors: (.*)", text):
            errors += sum(int(n) for n in re.findall(r"\d+", m.group(1)))
    us = 1_000_000 / clk_tck / count
    rows[label] = (count / seconds, statistics.median(p50s), p99, ticks * us, db_ticks * us)
    if label == "hello":
        print(f"{'target':8} {'req/s':>8} {'/hello':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'app us':>7} {'db us':>7} {'/hello':>7} {'non-2xx':>8} {'sock err':>8}")
    rps, p50, p99, app_us, db_us = rows[label]
    hello_us = rows["hello"][3] + rows["hello"][4]
    print(f"{label:8} {rps:8.1f} {rps / rows['hello'][0]:7.0%} {p50:7.2f} {p99:7.2f} "
          f"{app_us:7.0f} {db_us:7.0f} {hello_us / (app_us + db_us):7.0%} {non2xx:8d} {errors:8d}")

hello = rows["hello"][0]
print()
print("aim                                       figure    aim")
for label, ratio_aim, p99_aim in (("healthz", 0.90, None), ("list", 0.50, 30), ("create", 0.35, 40)):
    rps, _, p99, _, _ = rows[label]
    p99_text = f", p99 {p99:.0f} ms (<= {p99_aim} ms)" if p99_aim else ""
    print(f"{label + ' / hello':41} {rps / hello:6.0%}    >= {ratio_aim:.0%}{p99_text}")
print(f"{'  uncached list / hello':41} {rows['uncached'][0] / hello:6.0%}")
print(f"{'list / plain (the same 100 rows)':41} {rows['list'][0] / rows['plain'][0]:6.2f}x   > 1x")
print(f"{'  uncached list / plain':41} {rows['uncached'][0] / rows['plain'][0]:6.2f}x")
deep, first = rows["deep"], rows["uncached"]
print(f"{'last page of 10^6 / first of 10^2 (uncached), p50':41} {deep[1] / first[1]:6.2f}x   <= 1.5x")
print(f"{'  the same by CPU per request':41} {(deep[3] + deep[4]) / (first[3] + first[4]):6.2f}x")
offset = rows["offset"]
print(f"{'  by offset (deprecated), CPU per request':41} "
      f"{(offset[3] + offset[4]) / (first[3] + first[4]):6.0f}x")
PY
echo "items created during the run: $created"
