#!/usr/bin/env bash
# Benchmark of the service under gunicorn (2 workers, app/gunicorn.conf.py) on a
# local PostgreSQL 15, measured with wrk (20 connections, 15 s each):
#   hello    a minimal Flask app under the same gunicorn settings (the ceiling)
#   healthz  /healthz (no database)
#   list     GET /api/v1/items?limit=20 (database read)
#   create   POST /api/v1/items (database write)
# Prints req/s, p99 latency and non-2xx/socket errors for each. Cleans up after itself.
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
  url="http://127.0.0.1:$port"
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
start_gunicorn webapp webapp.wsgi:app "$root/app"
app_url=$url
wait_http "$hello_url/"
wait_http "$app_url/healthz"
for i in $(seq 1 50); do
  curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"name\": \"seed $i\"}" "$app_url/api/v1/items"
done

measure() {  # label url [lua]
  local label=$1 target=$2 script=${3:-} out rps p99 non2xx errors
  local args=(-t2 "-c$connections" "-d$duration" --latency)
  [[ -n $script ]] && args+=(-s "$script")
  echo "bench: $label ($target)" >&2
  out=$(wrk "${args[@]}" "$target")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  errors=$(awk '/Socket errors:/ {print $0}' <<<"$out" | sed 's/^ *Socket errors: //')
  # Rows go to a file: measure also runs in $(...) subshells.
  printf '%-8s %10s %10s %8s  %s\n' "$label" "$rps" "$p99" "${non2xx:-0}" "${errors:-none}" \
    >>"$work/results"
  echo "$rps"
}

hello_rps=$(measure hello "$hello_url/")
health_rps=$(measure healthz "$app_url/healthz")
measure list "$app_url/api/v1/items?limit=20" >/dev/null
measure create "$app_url/api/v1/items" "$work/post.lua" >/dev/null

rows=$(psql -X -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'SELECT count(*) FROM items')
echo
echo "wrk: $connections connections, $duration per run, gunicorn 2 workers (gthread)"
printf '%-8s %10s %10s %8s  %s\n' "target" "req/s" "p99" "non-2xx" "socket errors"
cat "$work/results"
python3 - "$health_rps" "$hello_rps" <<'PY'
import sys
health, hello = map(float, sys.argv[1:3])
print(f"healthz / hello = {health / hello:.0%} (aim: >= 70%)")
PY
echo "items rows after the run: $rows"
