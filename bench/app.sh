#!/usr/bin/env bash
# Benchmark of the service under gunicorn (2 workers, app/gunicorn.conf.py) on a
# local PostgreSQL 15, measured with wrk (20 connections, 15 s each):
#   hello    a minimal Flask app under the same gunicorn settings (the ceiling)
#   healthz  /healthz (no database)
#   list     GET /api/v1/items?limit=20 (database read)
#   create   POST /api/v1/items (database write)
# Prints req/s, p99 latency, worker CPU per request (µs, less sensitive to other load
# on the machine than req/s) and non-2xx/socket errors for each. Cleans up after itself.
#   usage: bench/app.sh [SECONDS_PER_TARGET] [CONNECTIONS]   (BENCH_ROUNDS=3 slices each)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=${1:-15}
connections=${2:-20}
rounds=${BENCH_ROUNDS:-3}
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
export DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres"
PYTHONPATH="$root/app" python3 -m webapp.migrate >/dev/null

start_gunicorn() {  # name module dir -> sets $url
  local name=$1 module=$2 dir=$3 port
  port=$(free_port)
  mkdir -p "$work/$name-prom"
  PYTHONPATH="$dir" PROMETHEUS_MULTIPROC_DIR="$work/$name-prom" \
    GUNICORN_BIND="127.0.0.1:$port" GUNICORN_WORKERS=2 \
    gunicorn -c "$root/app/gunicorn.conf.py" --chdir "$dir" "$module" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  master=$!
  url="http://127.0.0.1:$port"
}

# CPU time (clock ticks) used so far by the workers of gunicorn master $1: unlike
# req/s it does not depend on what else the machine is doing during the run.
worker_ticks() {
  local total=0 child children
  read -r -a children <"/proc/$1/task/$1/children"
  for child in "${children[@]}"; do
    total=$((total + $(sed 's/.*) //' "/proc/$child/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# The ceiling: the smallest Flask app, same gunicorn settings.
mkdir -p "$work/hello"
cat >"$work/hello/hello.py" <<'PY'
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "hello"
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

start_gunicorn hello hello:app "$work/hello"
hello_url=$url
hello_master=$master
start_gunicorn webapp webapp.wsgi:app "$root/app"
app_url=$url
app_master=$master
wait_http "$hello_url/"
wait_http "$app_url/healthz"
for i in $(seq 1 50); do
  curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"name\": \"seed $i\"}" "$app_url/api/v1/items"
done

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
    echo "ticks_before $(worker_ticks "$pid")"
    wrk "${args[@]}" "$target"
    echo "ticks_after $(worker_ticks "$pid")"
  } >"$out"
}

for round in $(seq 1 "$rounds"); do
  run_slice hello "$hello_master" "$hello_url/" "$round"
  run_slice healthz "$app_master" "$app_url/healthz" "$round"
  run_slice list "$app_master" "$app_url/api/v1/items?limit=20" "$round"
  run_slice create "$app_master" "$app_url/api/v1/items" "$round" "$work/post.lua"
done

rows=$(psql -X -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'SELECT count(*) FROM items')
echo
echo "wrk: $connections connections, ${duration}s per target ($rounds interleaved slices)," \
  "gunicorn 2 workers (gthread)"
python3 - "$work/out" "$(getconf CLK_TCK)" <<'PY'
import re
import sys
from pathlib import Path

out, clk_tck = Path(sys.argv[1]), int(sys.argv[2])
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * UNIT_MS[unit]


rows = {}
for label in ("hello", "healthz", "list", "create"):
    count = seconds = ticks = non2xx = errors = 0
    p99 = 0.0
    for path in sorted(out.glob(f"{label}.*")):
        text = path.read_text()
        done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
        count += int(done.group(1))
        seconds += float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
        ticks += int(re.search(r"ticks_after (\d+)", text).group(1))
        ticks -= int(re.search(r"ticks_before (\d+)", text).group(1))
        p99 = max(p99, ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)))
        if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
            non2xx += int(m.group(1))
        if m := re.search(r"Socket errors: (.*)", text):
            errors += sum(int(n) for n in re.findall(r"\d+", m.group(1)))
    rps = count / seconds
    cpu_us = ticks * 1_000_000 / clk_tck / count
    rows[label] = (rps, cpu_us)
    if label == "hello":
        print(f"{'target':8} {'req/s':>9} {'p99 ms':>9} {'CPU us/req':>11} {'non-2xx':>8} {'sock err':>8}")
    print(f"{label:8} {rps:9.1f} {p99:9.1f} {cpu_us:11.0f} {non2xx:8d} {errors:8d}")

(h_rps, h_cpu), (z_rps, z_cpu) = rows["hello"], rows["healthz"]
print(f"healthz / hello: {z_rps / h_rps:.0%} of the req/s (aim: >= 70%); "
      f"{h_cpu / z_cpu:.0%} judged by worker CPU per request")
PY
echo "items rows after the run: $rows"
