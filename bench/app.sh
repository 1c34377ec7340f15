#!/usr/bin/env bash
# Benchmark of the service under gunicorn (2 workers, app/gunicorn.conf.py) on a
# local PostgreSQL 15, measured with wrk (20 connections, 15 s each):
#   hello    a minimal Flask app under the same gunicorn settings (the ceiling)
#   healthz  /healthz (no database)
#   list     GET /api/v1/items?limit=20 (database read)
#   create   POST /api/v1/items (database write)
# Prints req/s, p99 latency, worker CPU per request (µs) and non-2xx/socket errors for
# each. Cleans up after itself.
#   usage: bench/app.sh [DURATION] [CONNECTIONS]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=${1:-15s}
connections=${2:-20}
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

clk_tck=$(getconf CLK_TCK)
measure() {  # label master url [lua]
  local label=$1 pid=$2 target=$3 script=${4:-} out rps p99 non2xx errors before after count cpu
  local args=(-t2 "-c$connections" "-d$duration" --latency)
  [[ -n $script ]] && args+=(-s "$script")
  echo "bench: $label ($target)" >&2
  before=$(worker_ticks "$pid")
  out=$(wrk "${args[@]}" "$target")
  after=$(worker_ticks "$pid")
  count=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(((after - before) * 1000000 / clk_tck / count))
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  errors=$(awk '/Socket errors:/ {print $0}' <<<"$out" | sed 's/^ *Socket errors: //')
  # Rows go to a file: measure also runs in $(...) subshells.
  printf '%-8s %10s %10s %12s %8s  %s\n' "$label" "$rps" "$p99" "$cpu" "${non2xx:-0}" \
    "${errors:-none}" >>"$work/results"
  echo "$rps $cpu"
}

hello=$(measure hello "$hello_master" "$hello_url/")
health=$(measure healthz "$app_master" "$app_url/healthz")
measure list "$app_master" "$app_url/api/v1/items?limit=20" >/dev/null
measure create "$app_master" "$app_url/api/v1/items" "$work/post.lua" >/dev/null

rows=$(psql -X -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'SELECT count(*) FROM items')
echo
echo "wrk: $connections connections, $duration per run, gunicorn 2 workers (gthread)"
printf '%-8s %10s %10s %12s %8s  %s\n' "target" "req/s" "p99" "worker-CPU" "non-2xx" \
  "socket errors"
cat "$work/results"
# shellcheck disable=SC2086 # word splitting wanted: "req/s cpu" pairs
python3 - $health $hello <<'PY'
import sys
health_rps, health_cpu, hello_rps, hello_cpu = map(float, sys.argv[1:5])
print(f"healthz / hello: {health_rps / hello_rps:.0%} of the req/s (aim: >= 70%), "
      f"{hello_cpu / health_cpu:.0%} by worker CPU per request (independent of machine load)")
PY
echo "items rows after the run: $rows"
